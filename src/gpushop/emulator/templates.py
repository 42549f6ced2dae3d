"""Templates (reference section 9): a seeded public catalogue plus the account's own templates.

A template row has exactly the fields of `shared/fixtures/vastai/templates_search.json`. Search
sees the public templates and the caller's private ones (never another user's private ones).
`hash_id` is a content hash: an edit makes a new one while `id` stays, and, as the CLI says, the
old hash keeps working for anyone already using it (creates resolve it to that old version).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpushop.emulator.dsl import OPS, QueryError, compile_query
from gpushop.emulator.errors import ApiError, invalid_args

COLUMNS = (
    "args_str",
    "count_created",
    "created_at",
    "creator_id",
    "default_tag",
    "desc",
    "docker_login_repo",
    "env",
    "extra_filters",
    "hash_id",
    "href",
    "id",
    "image",
    "jup_direct",
    "jupyter_dir",
    "name",
    "onstart",
    "private",
    "recent_create_date",
    "recommended",
    "recommended_disk_space",
    "repo",
    "runtype",
    "ssh_direct",
    "tag",
    "use_jupyter_lab",
    "use_ssh",
)
# What a template's author sets (create / edit bodies); the rest is the server's bookkeeping.
CONTENT = (
    "name",
    "image",
    "tag",
    "href",
    "repo",
    "env",
    "onstart",
    "jup_direct",
    "ssh_direct",
    "use_jupyter_lab",
    "runtype",
    "use_ssh",
    "jupyter_dir",
    "docker_login_repo",
    "extra_filters",
    "recommended_disk_space",
    "desc",
    "private",
)
BOOLS = frozenset({"jup_direct", "ssh_direct", "use_jupyter_lab", "use_ssh", "private"})
STRINGS = frozenset(
    {"name", "image", "tag", "href", "repo", "env", "onstart", "runtype", "jupyter_dir"}
    | {"docker_login_repo", "desc"}
)
# Searchable columns (CLI `templates_fields`) and how filter values are coerced.
FILTER_KINDS: dict[str, str] = {
    "id": "num",
    "creator_id": "num",
    "created_at": "num",
    "count_created": "num",
    "recent_create_date": "num",
    "recommended_disk_space": "num",
    "default_tag": "str",
    "docker_login_repo": "str",
    "image": "str",
    "hash_id": "str",
    "name": "str",
    "tag": "str",
    "jup_direct": "bool",
    "recommended": "bool",
    "ssh_direct": "bool",
    "use_ssh": "bool",
    "private": "bool",
}
NOT_FOUND = {"success": False, "msg": "No templates found"}
VAST_CREATOR = 62897  # Vast.ai's own templates (the fixture's PyTorch template)


def _bad_query(msg: str) -> ApiError:
    return ApiError(400, {"error": "invalid_request", "msg": f"Invalid query: {msg}"})


def _no_template(what: str) -> ApiError:
    return ApiError(
        404, {"success": False, "error": "no_such_template", "msg": f"No template {what}."}
    )


@dataclass
class Template:
    row: dict[str, Any]  # the fields the API shows, in COLUMNS order
    readme: str | None = None
    readme_visible: bool = True

    @property
    def id(self) -> int:
        return int(self.row["id"])


def content_hash(row: dict[str, Any]) -> str:
    """32 hex of the content: same content, same hash (shared across users, as the CLI says)."""
    content = {k: row.get(k) for k in CONTENT}
    content["creator_id"] = row.get("creator_id")
    return hashlib.md5(
        json.dumps(content, sort_keys=True, default=str).encode(), usedforsecurity=False
    ).hexdigest()


def _row(fields: dict[str, Any]) -> dict[str, Any]:
    row = {name: fields.get(name) for name in COLUMNS}
    row["args_str"] = row["args_str"] or ""
    if not row["hash_id"]:
        row["hash_id"] = content_hash(row)
    return row


def _seed(user_id: int) -> list[dict[str, Any]]:
    """A realistic public catalogue (plus another user's private template, never shown)."""
    common = {"args_str": "", "docker_login_repo": None, "recommended": False, "private": False}
    return [
        {  # the fixture's first template, field for field
            **common,
            "id": 297196,
            "hash_id": "661d064bbda1f2a133816b6d55da07c3",
            "name": "PyTorch (Vast)",
            "desc": "PyTorch with CUDA, Jupyter and SSH",
            "image": "vastai/pytorch",
            "tag": "@vastai-automatic-tag",
            "default_tag": "@vastai-automatic-tag",
            "href": "https://hub.docker.com/r/vastai/pytorch",
            "repo": "vastai/pytorch",
            "env": "-p 1111:1111 -p 8080:8080 -p 8384:8384 -p 72299:72299",
            "onstart": "entrypoint.sh",
            "runtype": "jupyter",
            "jup_direct": True,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": True,
            "jupyter_dir": "/workspace",
            "extra_filters": {"cuda_max_good": {"gte": 12.4}, "verified": {"eq": True}},
            "recommended": True,
            "recommended_disk_space": 32.0,
            "creator_id": VAST_CREATOR,
            "count_created": 1843211,
            "created_at": 1719950400.0,
            "recent_create_date": 1773575880.0,
        },
        {
            **common,
            "id": 341205,
            "name": "ostris AI Toolkit (FLUX LoRA)",
            "desc": "ostris/ai-toolkit for FLUX.1 LoRA training: python run.py config.yaml in "
            "/app/ai-toolkit, UI on 8675",
            "image": "ostris/aitoolkit",
            "tag": "latest",
            "default_tag": "latest",
            "href": "https://github.com/ostris/ai-toolkit",
            "repo": "ostris/ai-toolkit",
            "env": "-p 8675:8675 -e HF_HUB_ENABLE_HF_TRANSFER=1",
            "onstart": "",
            "runtype": "ssh",
            "jup_direct": False,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            # the image is built on nvidia/cuda:13.0.3: the runtime refuses older drivers
            "extra_filters": {
                "gpu_ram": {"gte": 24000},
                "cuda_max_good": {"gte": 13.0},
                "reliability": {"gte": 0.95},
            },
            "recommended_disk_space": 80.0,
            "creator_id": 318442,
            "count_created": 9412,
            "created_at": 1730419200.0,
            "recent_create_date": 1773561200.0,
        },
        {
            **common,
            "id": 284512,
            "name": "ComfyUI",
            "desc": "ComfyUI with the manager, Jupyter and SSH",
            "image": "vastai/comfy",
            "tag": "@vastai-automatic-tag",
            "default_tag": "@vastai-automatic-tag",
            "href": "https://github.com/comfyanonymous/ComfyUI",
            "repo": "vastai/comfy",
            "env": "-p 1111:1111 -p 8080:8080 -p 8188:8188 -p 8384:8384",
            "onstart": "entrypoint.sh",
            "runtype": "jupyter",
            "jup_direct": True,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": True,
            "jupyter_dir": "/workspace",
            "extra_filters": {"cuda_max_good": {"gte": 12.1}, "gpu_ram": {"gte": 12000}},
            "recommended": True,
            "recommended_disk_space": 64.0,
            "creator_id": VAST_CREATOR,
            "count_created": 602114,
            "created_at": 1716508800.0,
            "recent_create_date": 1773574100.0,
        },
        {
            **common,
            "id": 301877,
            "name": "vLLM (OpenAI-compatible server)",
            "desc": "vLLM serving $VLLM_MODEL on port 8000",
            "image": "vllm/vllm-openai",
            "tag": "latest",
            "default_tag": "latest",
            "href": "https://docs.vllm.ai",
            "repo": "vllm/vllm-openai",
            "env": "-p 8000:8000 -e VLLM_MODEL=Qwen/Qwen2.5-7B-Instruct "
            "-e VLLM_ARGS='--max-model-len 8192'",
            "onstart": "vllm serve $VLLM_MODEL --port 8000 $VLLM_ARGS > /workspace/vllm.log 2>&1 &",
            "runtype": "ssh",
            "jup_direct": False,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            "extra_filters": {"cuda_max_good": {"gte": 12.4}, "gpu_ram": {"gte": 20000}},
            "recommended": True,
            "recommended_disk_space": 60.0,
            "creator_id": VAST_CREATOR,
            "count_created": 211930,
            "created_at": 1721865600.0,
            "recent_create_date": 1773570000.0,
        },
        {
            **common,
            "id": 266104,
            "name": "NVIDIA CUDA (devel)",
            "desc": "CUDA 12.4 toolkit and cuDNN on Ubuntu 22.04, SSH only",
            "image": "nvidia/cuda",
            "tag": "12.4.1-cudnn-devel-ubuntu22.04",
            "default_tag": "12.4.1-cudnn-devel-ubuntu22.04",
            "href": "https://hub.docker.com/r/nvidia/cuda",
            "repo": "nvidia/cuda",
            "env": "",
            "onstart": "",
            "runtype": "ssh",
            "jup_direct": False,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            "extra_filters": {"cuda_max_good": {"gte": 12.4}},
            "recommended_disk_space": 16.0,
            "creator_id": VAST_CREATOR,
            "count_created": 388021,
            "created_at": 1711929600.0,
            "recent_create_date": 1773573300.0,
        },
        {
            **common,
            "id": 279340,
            "name": "Kohya_ss GUI",
            "desc": "bmaltais/kohya_ss LoRA trainer (SD 1.5, SDXL, FLUX), GUI on 7860",
            "image": "vastai/kohya",
            "tag": "@vastai-automatic-tag",
            "default_tag": "@vastai-automatic-tag",
            "href": "https://github.com/bmaltais/kohya_ss",
            "repo": "vastai/kohya",
            "env": "-p 1111:1111 -p 7860:7860 -p 8080:8080",
            "onstart": "entrypoint.sh",
            "runtype": "jupyter",
            "jup_direct": True,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": True,
            "jupyter_dir": "/workspace",
            "extra_filters": {"cuda_max_good": {"gte": 12.1}, "gpu_ram": {"gte": 16000}},
            "recommended_disk_space": 48.0,
            "creator_id": VAST_CREATOR,
            "count_created": 74318,
            "created_at": 1714521600.0,
            "recent_create_date": 1773540000.0,
        },
        {
            **common,
            "id": 312450,
            "name": "Vast base image",
            "desc": "Ubuntu with Vast's portal, Jupyter and SSH",
            "image": "vastai/base-image",
            "tag": "@vastai-automatic-tag",
            "default_tag": "@vastai-automatic-tag",
            "href": "https://hub.docker.com/r/vastai/base-image",
            "repo": "vastai/base-image",
            "env": "-p 1111:1111 -p 8080:8080",
            "onstart": "entrypoint.sh",
            "runtype": "jupyter",
            "jup_direct": True,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": True,
            "jupyter_dir": "/workspace",
            "extra_filters": {},
            "recommended": True,
            "recommended_disk_space": 16.0,
            "creator_id": VAST_CREATOR,
            "count_created": 953201,
            "created_at": 1726000000.0,
            "recent_create_date": 1773575000.0,
        },
        {  # someone else's private template: must never show up
            **common,
            "id": 405511,
            "name": "private sdxl finetune",
            "desc": "",
            "image": "pytorch/pytorch",
            "tag": "2.5.1-cuda12.4-cudnn9-devel",
            "default_tag": "2.5.1-cuda12.4-cudnn9-devel",
            "href": None,
            "repo": None,
            "env": "-e WANDB_MODE=offline",
            "onstart": "",
            "runtype": "ssh",
            "jup_direct": False,
            "ssh_direct": True,
            "use_ssh": True,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            "extra_filters": {"gpu_ram": {"gte": 24000}},
            "recommended_disk_space": 100.0,
            "creator_id": user_id + 1,
            "count_created": 3,
            "created_at": 1770000000.0,
            "recent_create_date": 1770100000.0,
            "private": True,
        },
    ]


class TemplateBook:
    """All templates of the emulated service, seen from the one emulated account."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.templates: dict[int, Template] = {}
        self.versions: dict[str, dict[str, Any]] = {}  # hash_id -> that version's row
        self.next_id = 420_001
        for fields in _seed(user_id):
            self._store(Template(_row(fields)))

    def _store(self, template: Template) -> None:
        self.templates[template.id] = template
        self.versions[template.row["hash_id"]] = dict(template.row)

    def _visible(self, row: dict[str, Any], *, own: bool = True) -> bool:
        """Public, or private to the account (`own`: the caller holds the account's key)."""
        return not row["private"] or (own and row["creator_id"] == self.user_id)

    # -- search --------------------------------------------------------------------------
    def search(
        self, filters: Any, order_by: Any, select: Any, *, own: bool = True
    ) -> list[dict[str, Any]]:
        """Matching templates the caller may see (`own` False: anonymous, public ones only)."""
        if filters is None:
            filters = {}
        if not isinstance(filters, dict):
            raise _bad_query("must be dict of conditions")
        checks = [_predicate(name, spec) for name, spec in filters.items()]
        rows = [t.row for t in self.templates.values() if self._visible(t.row, own=own)]
        rows = [row for row in rows if all(check(row) for check in checks)]
        for column, desc in reversed(_order(order_by)):
            present = [r for r in rows if r.get(column) is not None]
            absent = [r for r in rows if r.get(column) is None]
            present.sort(key=lambda r, c=column: r[c], reverse=desc)  # type: ignore[misc]
            rows = present + absent
        columns = _select(select)
        if columns is None:
            return [dict(row) for row in rows]
        return [{c: row.get(c) for c in columns} for row in rows]

    # -- create, edit, delete ---------------------------------------------------------------
    def create(self, body: dict[str, Any], now: float) -> Template:
        fields = _content(body, {})
        fields.update(
            id=self.next_id,
            creator_id=self.user_id,
            count_created=0,
            created_at=now,
            recent_create_date=None,
            recommended=False,
            default_tag=fields["tag"],
        )
        self.next_id += 1
        template = Template(_row(fields), *_readme(body, None, True))
        self._store(template)
        return template

    def update(self, body: dict[str, Any]) -> Template:
        template = self._own(body.get("id"), body.get("hash_id"))
        fields = _content(body, template.row)
        row = {**template.row, **fields, "default_tag": fields["tag"], "hash_id": None}
        template.row = _row(row)
        template.readme, template.readme_visible = _readme(
            body, template.readme, template.readme_visible
        )
        self._store(template)  # the old hash stays in `versions`: it still creates instances
        return template

    def delete(self, body: dict[str, Any]) -> int:
        template = self._own(body.get("template_id"), body.get("hash_id"))
        del self.templates[template.id]
        for hash_id in [h for h, row in self.versions.items() if row["id"] == template.id]:
            del self.versions[hash_id]
        return template.id

    def _own(self, template_id: Any, hash_id: Any) -> Template:
        """The caller's template by id (preferred) or by any of its hashes."""
        if template_id is not None:
            if isinstance(template_id, bool) or not isinstance(template_id, int | str):
                raise invalid_args("template id must be an integer")
            try:
                wanted = int(template_id)
            except ValueError:
                raise invalid_args("template id must be an integer") from None
            found = self.templates.get(wanted)
            what = f"with id {wanted}"
        elif isinstance(hash_id, str) and hash_id:
            old = self.versions.get(hash_id)
            found = self.templates.get(old["id"]) if old is not None else None
            what = f"with hash_id {hash_id}"
        else:
            raise invalid_args("give template_id or hash_id")
        if found is None or not self._visible(found.row):
            raise _no_template(what)
        if found.row["creator_id"] != self.user_id:
            raise ApiError(
                403,
                {
                    "success": False,
                    "error": "not_authorized",
                    "msg": f"Template {found.id} is not yours to change.",
                },
            )
        return found

    # -- instances ---------------------------------------------------------------------------
    def resolve(self, hash_id: str | None, template_id: int | None) -> dict[str, Any] | None:
        """The template version a create names (hash first: it pins a version), or None."""
        row: dict[str, Any] | None = None
        if hash_id:
            row = self.versions.get(hash_id)
        elif template_id is not None:
            template = self.templates.get(template_id)
            row = template.row if template is not None else None
        if row is None or not self._visible(row):
            return None
        return row

    def record_use(self, template_id: int, now: float) -> None:
        template = self.templates.get(template_id)
        if template is not None:
            template.row["count_created"] += 1
            template.row["recent_create_date"] = now


def _content(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Validated content fields: given ones replace, missing ones keep `current` (or default)."""
    out: dict[str, Any] = {}
    for name in CONTENT:
        value = body[name] if name in body else current.get(name)
        if name in BOOLS:
            value = bool(value) if value is not None else name == "private"
        elif name in STRINGS and value is not None and not isinstance(value, str):
            raise invalid_args(f"{name} must be a string")
        out[name] = value
    image = out["image"]
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise invalid_args("image is required: a docker image name without a tag")
    out["tag"] = out["tag"] or "latest"
    out["name"] = out["name"] or image
    out["runtype"] = out["runtype"] or "ssh"
    out["extra_filters"] = _extra_filters(out["extra_filters"])
    out["recommended_disk_space"] = _disk(out["recommended_disk_space"])
    return out


def _extra_filters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_args("extra_filters must be an object of search conditions")
    try:
        compile_query(value)  # the same language as offer search
    except QueryError as exc:
        raise invalid_args(f"extra_filters: {exc.msg}") from None
    return value


def _disk(value: Any) -> float | None:
    """GB; the CLI sends `--disk_space` as a string."""
    if value is None or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise invalid_args("recommended_disk_space must be a positive number of GB")
    return number


def _readme(body: dict[str, Any], readme: str | None, visible: bool) -> tuple[str | None, bool]:
    text = body.get("readme", readme)
    return (text if isinstance(text, str) else None), bool(body.get("readme_visible", visible))


def _coerce(kind: str, value: Any, name: str) -> Any:
    if value is None:
        return None
    if kind == "num" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _bad_query(f"invalid value {value!r} for {name}") from None
    if kind == "bool" and isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if kind == "str" and not isinstance(value, str):
        return str(value)
    return value


def _predicate(name: str, spec: Any) -> Callable[[dict[str, Any]], bool]:
    kind = FILTER_KINDS.get(name)
    if kind is None:
        raise _bad_query(f"{name} is not a valid search key")
    if not isinstance(spec, dict):
        spec = {"eq": spec}
    checks: list[Callable[[Any], bool]] = []
    for op, value in spec.items():
        if op in ("in", "notin"):
            if not isinstance(value, list):
                raise _bad_query(f"{op} needs a list for {name}")
            members = {_coerce(kind, v, name) for v in value}
            inside = op == "in"
            checks.append(lambda x, m=members, inside=inside: (x in m) == inside)  # type: ignore[misc]
        elif op in OPS:
            fn, target = OPS[op], _coerce(kind, value, name)

            def check(
                x: Any,
                fn: Callable[[Any, Any], bool] = fn,
                target: Any = target,
                equality: bool = op in ("eq", "neq"),
            ) -> bool:
                if x is None or target is None:
                    return bool(fn(x, target)) if equality else False
                try:
                    return bool(fn(x, target))
                except TypeError:
                    return False

            checks.append(check)
        else:
            raise _bad_query(f"unknown operator {op!r} for {name}")
    return lambda row: all(check(row.get(name)) for check in checks)


def _order(raw: Any) -> list[tuple[str, bool]]:
    """`order_by` as `[{"col", "dir"}]` or `[[col, dir]]`; default: most used first."""
    if raw is None or raw == []:
        return [("count_created", True), ("id", False)]
    if not isinstance(raw, list):
        raise _bad_query("order_by must be a list")
    order: list[tuple[str, bool]] = []
    for item in raw:
        if isinstance(item, dict):
            col, direction = item.get("col"), item.get("dir", "asc")
        elif isinstance(item, list) and 1 <= len(item) <= 2:
            col, direction = item[0], (item[1] if len(item) == 2 else "asc")
        else:
            raise _bad_query("order_by entries must be {col, dir}")
        if not isinstance(col, str) or col not in COLUMNS:
            raise _bad_query(f"{col} is not a valid search key")
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise _bad_query(f"order direction must be asc or desc, not {direction!r}")
        order.append((col, direction.lower() == "desc"))
    return [*order, ("id", False)]


def _select(raw: Any) -> list[str] | None:
    if raw is None or raw == [] or (isinstance(raw, list) and "*" in raw):
        return None
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise _bad_query("select_cols must be a list of column names")
    return ["id", *[c for c in raw if c != "id"]]
