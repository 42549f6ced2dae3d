"""Job configs as ai-toolkit reads them (toolkit/config.py upstream): YAML or JSON, `${VAR}`
replaced from the environment, `[name]` replaced by the job name, then checked key by key.
A missing or invalid key is one clear `ValueError` naming the key (config.process[0].train.lr).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import JobError, config_error, value_error

EXTENSIONS = (".json", ".jsonc", ".yaml", ".yml")
NETWORK_TYPES = ("lora", "lokr")
SAVE_DTYPES = {
    "float16": "F16",
    "fp16": "F16",
    "bf16": "BF16",
    "bfloat16": "BF16",
    "float32": "F32",
    "fp32": "F32",
}


@dataclass(frozen=True)
class Dataset:
    folder: Path
    caption_ext: str
    resolutions: tuple[int, ...]


@dataclass(frozen=True)
class Job:
    name: str
    config: dict[str, Any]  # after substitutions: what config.yaml gets
    training_folder: Path
    device: int  # the CUDA ordinal of `device: cuda:N`
    network_type: str
    rank: int
    alpha: float
    save_dtype: str  # safetensors dtype: F16, BF16, F32
    save_every: int
    keep: int  # max_step_saves_to_keep
    datasets: tuple[Dataset, ...]
    batch_size: int
    steps: int
    lr: float
    grad_accum: int
    disable_sampling: bool
    skip_first_sample: bool
    model: str
    is_flux: bool
    quantize: bool
    low_vram: bool
    sample_every: int
    prompts: tuple[str, ...]
    sample_steps: int
    trigger_word: str | None

    @property
    def save_root(self) -> Path:
        return self.training_folder / self.name

    @property
    def max_resolution(self) -> int:
        return max(r for d in self.datasets for r in d.resolutions)


def load(path: str, name: str | None, root: str) -> Job:
    text, real = _read(path, root)
    text = re.sub(r"\$\{([^}]+)\}", _env_value, text)
    raw = _parse(text, real, path)
    if not isinstance(raw, dict):
        raise config_error("config file must be a mapping of keys")
    if "job" not in raw:
        raise config_error("config file must have a job key")
    if not isinstance(raw.get("config"), dict):
        raise config_error("config file must have a config section")
    if "name" not in raw["config"] and name is None:
        raise config_error("config file must have a config.name key")
    job_name = str(name if name is not None else raw["config"]["name"])
    raw = json.loads(json.dumps(raw).replace("[name]", job_name))
    if raw["job"] != "extension":
        raise JobError("ValueError", f"Unknown job type {raw['job']}", CONFIG_JOB_FRAMES)
    return _job(job_name, raw)


CONFIG_JOB_FRAMES = (
    ("run.py", 120, "<module>", "main()"),
    ("run.py", 108, "main", "raise e"),
    ("run.py", 93, "main", "job = get_job(config_file, args.name)"),
    ("toolkit/job.py", 45, "get_job", "raise ValueError(f'Unknown job type {job}')"),
)


def _env_value(match: re.Match[str]) -> str:
    value = os.environ.get(match.group(1))
    if value is None:
        raise config_error(
            f"Environment variable {match.group(1)} not set. "
            "Please ensure it's defined before proceeding."
        )
    return value


def _read(path: str, root: str) -> tuple[str, str]:
    """As upstream: <root>/config/<path>[ext], else the path, else relative to cwd."""
    in_folder = os.path.join(root, "config", path)
    candidates = [in_folder] + [in_folder + ext for ext in EXTENSIONS] + [path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as f:
                return f.read(), candidate
    raise config_error(f"Could not find config file {path}")


def _parse(text: str, real: str, given: str) -> Any:
    if real.endswith((".json", ".jsonc")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobError("json.decoder.JSONDecodeError", str(exc)) from None
    if real.endswith((".yaml", ".yml")):
        import yaml  # only YAML needs it; ai-toolkit's requirements bring it

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise JobError("yaml.scanner.ScannerError", str(exc)) from None
    raise config_error(f"Config file {given} must be a json or yaml file")


class _Section:
    """A config mapping that knows its dotted path, for error messages."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise value_error(f"{path} must be a mapping")
        self.data: dict[str, Any] = data
        self.path = path

    def section(self, key: str, *, required: bool = True) -> _Section | None:
        if key not in self.data or self.data[key] is None:
            if required:
                raise value_error(f"{self.path}.{key} is required")
            return None
        return _Section(self.data[key], f"{self.path}.{key}")

    def need(self, key: str) -> Any:
        if key not in self.data or self.data[key] is None:
            raise value_error(f"{self.path}.{key} is required")
        return self.data[key]

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default) if default is not None else self.need(key)
        if not isinstance(value, str) or not value.strip():
            raise value_error(f"{self.path}.{key} must be a non-empty string, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.data.get(key, default) if default is not None else self.need(key)
        number = _number(value)
        if number is None or number != int(number) or number < minimum:
            raise value_error(f"{self.path}.{key} must be an integer >= {minimum}, got {value!r}")
        return int(number)

    def positive(self, key: str) -> float:
        value = self.need(key)
        number = _number(value)
        if number is None or number <= 0:
            raise value_error(f"{self.path}.{key} must be a positive number, got {value!r}")
        return number

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise value_error(f"{self.path}.{key} must be true or false, got {value!r}")
        return value


def _number(value: Any) -> float | None:
    """YAML reads `1e-4` as a string (ai-toolkit patches its loader): accept both."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _job(name: str, raw: dict[str, Any]) -> Job:
    config = _Section(raw["config"], "config")
    processes = config.need("process")
    if not isinstance(processes, list) or not processes:
        raise value_error('config file is invalid. Missing "config.process" key')
    proc = _Section(processes[0], "config.process[0]")
    kind = proc.need("type")
    if kind != "sd_trainer":
        raise value_error(f"Process type {kind} not found")
    device = proc.text("device")
    match = re.fullmatch(r"cuda(?::(\d+))?", device.strip())
    if match is None:
        raise value_error(f"config.process[0].device must be cuda or cuda:N, got {device!r}")

    network = proc.section("network")
    save = proc.section("save")
    train = proc.section("train")
    model = proc.section("model")
    assert network is not None and save is not None and train is not None and model is not None
    network_type = network.text("type").lower()
    if network_type not in NETWORK_TYPES:
        raise value_error(f"Unknown network type {network_type}: use lora or lokr")
    save_dtype = save.text("dtype").lower()
    if save_dtype not in SAVE_DTYPES:
        raise value_error(f"config.process[0].save.dtype: unknown dtype {save_dtype}")

    for key in ("optimizer", "noise_scheduler", "dtype"):
        train.text(key)
    disable_sampling = train.flag("disable_sampling")
    sample = proc.section("sample", required=not disable_sampling)
    prompts: tuple[str, ...] = ()
    sample_every, sample_steps = 0, 20
    if sample is not None and not disable_sampling:
        sample.text("sampler")
        sample_every = sample.integer("sample_every")
        sample_steps = sample.integer("sample_steps", 20)
        raw_prompts = sample.need("prompts")
        if not isinstance(raw_prompts, list) or not raw_prompts:
            raise value_error("config.process[0].sample.prompts must be a non-empty list")
        prompts = tuple(str(p) for p in raw_prompts)

    trigger = proc.data.get("trigger_word")
    return Job(
        name=name,
        config=raw,
        training_folder=Path(proc.text("training_folder")),
        device=int(match.group(1) or 0),
        network_type=network_type,
        rank=network.integer("linear"),
        alpha=network.positive("linear_alpha"),
        save_dtype=SAVE_DTYPES[save_dtype],
        save_every=save.integer("save_every"),
        keep=save.integer("max_step_saves_to_keep"),
        datasets=_datasets(proc.need("datasets")),
        batch_size=train.integer("batch_size"),
        steps=train.integer("steps"),
        lr=train.positive("lr"),
        grad_accum=train.integer("gradient_accumulation_steps", 1),
        disable_sampling=disable_sampling,
        skip_first_sample=train.flag("skip_first_sample"),
        model=model.text("name_or_path"),
        is_flux=model.flag("is_flux"),
        quantize=model.flag("quantize"),
        low_vram=model.flag("low_vram"),
        sample_every=sample_every,
        prompts=prompts,
        sample_steps=sample_steps,
        trigger_word=str(trigger) if trigger else None,
    )


def _datasets(raw: Any) -> tuple[Dataset, ...]:
    if not isinstance(raw, list) or not raw:
        raise value_error("config.process[0].datasets must be a non-empty list")
    out = []
    for i, item in enumerate(raw):
        section = _Section(item, f"config.process[0].datasets[{i}]")
        resolution = section.data.get("resolution", [512])
        values = resolution if isinstance(resolution, list) else [resolution]
        if not values or any(_number(v) is None or int(_number(v) or 0) < 64 for v in values):
            raise value_error(f"{section.path}.resolution must be a list of sizes, e.g. [1024]")
        out.append(
            Dataset(
                folder=Path(section.text("folder_path")),
                caption_ext=section.text("caption_ext", "txt").lstrip("."),
                resolutions=tuple(int(_number(v) or 0) for v in values),
            )
        )
    return tuple(out)
