"""The canonical GPU table: one name per model, whatever a provider or a user calls it.

``--gpu 4090``, ``rtx4090`` and ``RTX 4090`` all mean ``RTX 4090`` and never ``RTX 4090 D``.
A model groups its variants: ``A100`` is every A100 (PCIE, SXM4, 40 or 80 GB); ``A100 SXM4``
names that variant only. Matching is on a normalised key, never on substrings.

The table is provider-neutral: Vast.ai's names (``RTX 4090``, ``H100 SXM``), TensorDock's model
ids (``geforcertx4090-pcie-24gb``, ``h100-sxm5-80gb``) and the driver's names as ``nvidia-smi``
prints them (``NVIDIA H100 80GB HBM3``) resolve to the same model, variant and VRAM.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache

from gpushop.errors import UsageError


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str  # canonical, e.g. "RTX 4090"
    vram_gb: float  # typical per-GPU memory in GB (MB / 1000) of the common variant
    variants: tuple[str, ...]  # provider spellings, Vast.ai's first
    aliases: tuple[str, ...] = ()


def _m(name: str, vram: float, *variants: str, aliases: tuple[str, ...] = ()) -> GpuModel:
    return GpuModel(name, vram, variants or (name,), aliases)


MODELS: tuple[GpuModel, ...] = (
    _m("GTX 1070", 8.6),
    _m("GTX 1080 Ti", 11.3),
    _m("RTX 2080 Ti", 11.3),
    _m("Titan RTX", 25.4),
    _m("Titan V", 12.7),
    _m("RTX 3060", 12.3),
    _m("RTX 3060 Ti", 8.6),
    _m("RTX 3070", 8.6),
    _m("RTX 3070 Ti", 8.6),
    _m("RTX 3080", 10.2),
    _m("RTX 3080 Ti", 12.3),
    _m("RTX 3090", 24.6),
    _m("RTX 3090 Ti", 24.6),
    _m("RTX 4060", 8.2),
    _m("RTX 4060 Ti", 16.4),
    _m("RTX 4070", 12.3),
    _m("RTX 4070 Ti", 12.3),
    _m("RTX 4070S", 12.3, "RTX 4070S", "RTX 4070 Super"),
    _m("RTX 4080", 16.4),
    _m("RTX 4080S", 16.4, "RTX 4080S", "RTX 4080 Super"),
    _m("RTX 4090", 24.6),
    _m("RTX 4090 D", 24.6, "RTX 4090D", "RTX 4090 D"),
    _m("RTX 5060 Ti", 16.3),
    _m("RTX 5070", 12.2),
    _m("RTX 5070 Ti", 16.3),
    _m("RTX 5080", 16.3),
    _m("RTX 5090", 32.6),
    _m("RTX A2000", 6.1),
    _m("RTX A4000", 16.4),
    _m("RTX A4500", 20.5),
    _m("RTX A5000", 24.6),
    _m("RTX A6000", 49.1),
    _m("RTX 4000 Ada", 20.5, "RTX 4000Ada", "RTX 4000 Ada"),
    _m("RTX 5000 Ada", 32.8, "RTX 5000Ada", "RTX 5000 Ada"),
    _m("RTX 6000 Ada", 49.1, "RTX 6000Ada", "RTX 6000 Ada"),
    _m("RTX PRO 6000", 97.9, "RTX PRO 6000 WS", "RTX PRO 6000 S", "RTX PRO 6000"),
    _m("Quadro RTX 8000", 49.1, "Q RTX 8000", "Quadro RTX 8000"),
    _m("Tesla T4", 16.0, "Tesla T4", aliases=("t4",)),
    _m("Tesla P40", 24.5, "Tesla P40", aliases=("p40",)),
    _m("Tesla P100", 16.3, "Tesla P100", aliases=("p100",)),
    _m("Tesla V100", 16.9, "Tesla V100", "V100 SXM2", "V100 PCIE", aliases=("v100",)),
    _m("A10", 24.2, "A10", "A10G"),
    _m("A16", 16.4),
    _m("A30", 24.6),
    _m("A40", 49.1),
    _m("L4", 23.0),
    _m("L40", 46.1),
    _m("L40S", 46.1),
    _m("A100", 81.9, "A100 SXM4", "A100 PCIE", "A100X", "A100 SXM"),
    _m("A800", 81.9, "A800 PCIE", "A800 SXM4"),
    _m("H100", 81.6, "H100 SXM", "H100 PCIE", "H100 NVL"),
    _m("H200", 143.8, "H200", "H200 NVL"),
    _m("GH200", 102.0, "GH200 SXM", "GH200"),
    _m("B200", 183.0),
    _m("MI300X", 206.0, aliases=("instinctmi300x",)),
)

# Other providers' and the driver's spellings that the normalised key alone does not map onto
# a variant above (the key drops vendor words and memory sizes first): spelling -> variant.
SPELLINGS: dict[str, str] = {
    # TensorDock model ids ("v0Name"), memory size dropped
    "h100-sxm5": "H100 SXM",
    "h200-sxm5": "H200",
    "adartxa4000-pcie": "RTX 4000Ada",
    "adartxa5000-pcie": "RTX 5000Ada",
    "adartxa6000-pcie": "RTX 6000Ada",
    # nvidia-smi product names
    "H100 HBM3": "H100 SXM",
    "H100 SXM5": "H100 SXM",
    "Tesla V100-SXM2": "V100 SXM2",
    "Tesla V100-PCIE": "V100 PCIE",
    "Tesla V100S-PCIE": "V100 PCIE",
}

_DROP_WORDS = re.compile(r"\b(nvidia|geforce|amd|radeon|generation)\b")
_MEMORY_SUFFIX = re.compile(r"[-_ ]?\d+\s*gb$")
_MEMORY_WORD = re.compile(r"\b\d+\s*gb\b")
_MEMORY_GB = re.compile(r"(\d+)\s*gb\b")


def gpu_key(text: str) -> str:
    """The matching key of a GPU name: lower case, vendor words and memory suffix dropped.

    >>> gpu_key("RTX 4090"), gpu_key("rtx4090"), gpu_key("geforcertx4090-pcie-24gb")
    ('rtx4090', 'rtx4090', 'rtx4090pcie')
    """
    t = text.strip().lower()
    t = _MEMORY_SUFFIX.sub("", t)
    t = _MEMORY_WORD.sub(" ", t)  # "A100 80GB PCIe", "H100 80GB HBM3"
    t = _DROP_WORDS.sub(" ", t)
    t = t.replace("geforce", "")
    key = re.sub(r"[^a-z0-9]", "", t)
    # "super" and "S" are the same suffix in every provider's catalogue
    key = re.sub(r"super$", "s", key)
    return key


@dataclass(frozen=True, slots=True)
class GpuSelector:
    """What one ``--gpu`` value selects: a model, or one variant of it."""

    model: GpuModel
    variants: tuple[str, ...]  # provider spellings that match

    def matches(self, provider_name: str) -> bool:
        """Whether a provider's GPU name is one of the selected variants, in any provider's
        spelling (``geforcertx4090-pcie-24gb`` is an ``RTX 4090``)."""
        keys = {gpu_key(v) for v in self.variants}
        if gpu_key(provider_name) in keys:
            return True
        found = _lookup(provider_name)
        if found is None or found[0] != self.model:
            return False
        model, variant = found
        if variant is None:  # only the model is known: a whole-model selector matches
            return keys == {gpu_key(v) for v in model.variants}
        return gpu_key(variant) in keys


@cache
def _index() -> tuple[dict[str, GpuModel], dict[str, tuple[GpuModel, str]]]:
    by_model: dict[str, GpuModel] = {}
    by_variant: dict[str, tuple[GpuModel, str]] = {}
    for model in MODELS:
        keys = {gpu_key(model.name), *(gpu_key(a) for a in model.aliases)}
        # "4090" alone, "a6000" alone, "6000ada": the model number without its family prefix
        stripped = re.sub(r"^(rtx|gtx|tesla|quadro)", "", gpu_key(model.name))
        if stripped and stripped != gpu_key(model.name) and not stripped.isalpha():
            keys.add(stripped)
        for key in keys:
            by_model.setdefault(key, model)
        for variant in model.variants:
            vkey = gpu_key(variant)
            by_variant.setdefault(vkey, (model, variant))
            # TensorDock-style "<model>-pcie": the form factor without the memory size
            by_variant.setdefault(vkey + "pcie", (model, variant))
    for spelling, variant in SPELLINGS.items():
        by_variant.setdefault(gpu_key(spelling), by_variant[gpu_key(variant)])
    return by_model, by_variant


def _lookup(provider_name: str) -> tuple[GpuModel, str | None] | None:
    """(model, variant) of a provider's or the driver's GPU name; the variant is None when
    only the model is known. ``Tesla`` is dropped as a last resort (``Tesla V100-PCIE-32GB``)."""
    key = gpu_key(provider_name)
    by_model, by_variant = _index()
    for candidate in (key, key.removeprefix("tesla")):
        if candidate in by_variant:
            return by_variant[candidate]
        if candidate in by_model:
            return by_model[candidate], None
    return None


def resolve(text: str) -> GpuSelector:
    """Resolve a user's ``--gpu`` value; unknown names are a usage error with suggestions."""
    key = gpu_key(text)
    by_model, by_variant = _index()
    if key in by_model:
        model = by_model[key]
        return GpuSelector(model, model.variants)
    if key in by_variant:
        model, variant = by_variant[key]
        if gpu_key(model.name) == key:
            return GpuSelector(model, model.variants)
        return GpuSelector(model, (variant,))
    names = [m.name for m in MODELS]
    close = difflib.get_close_matches(text.strip(), names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"unknown GPU model {text!r}{hint}")


def canonical(provider_name: str) -> str:
    """The canonical model name for a provider's GPU name; unknown names pass through."""
    found = _lookup(provider_name)
    return found[0].name if found is not None else provider_name.strip()


def model_of(provider_name: str) -> GpuModel | None:
    found = _lookup(provider_name)
    return found[0] if found is not None else None


def vram_gb(provider_name: str) -> float | None:
    """Per-GPU memory in GB as the driver reports it (MiB / 1000, the unit Vast.ai lists).

    A name that states its size (``a100-pcie-40gb``) is taken at its word, converted from GiB;
    when that size is the model's usual one the table's value wins, so ``h100-sxm5-80gb`` and
    Vast's ``H100 SXM`` both say 81.6 and ``l40s-pcie-48gb`` says 46.1, what the card reports.

    >>> vram_gb("geforcertx4090-pcie-24gb"), vram_gb("a100-pcie-40gb"), vram_gb("RTX 4090")
    (24.6, 41.0, 24.6)
    """
    model = model_of(provider_name)
    stated = _MEMORY_GB.search(provider_name.lower())
    if stated is None:
        return model.vram_gb if model is not None else None
    size = int(stated.group(1)) * 1.024  # GiB -> MiB / 1000
    if model is not None and abs(model.vram_gb - size) <= 0.1 * size:
        return model.vram_gb
    return round(size, 1)


def parse_gpu_list(values: list[str] | None) -> list[GpuSelector]:
    """``--gpu`` is repeatable and takes comma lists: ``--gpu 4090,3090 --gpu A6000``."""
    out: list[GpuSelector] = []
    for value in values or []:
        for part in value.split(","):
            if part.strip():
                out.append(resolve(part))
    return out
