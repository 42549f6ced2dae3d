import pytest

from gpushop.errors import UsageError
from gpushop.gpus import canonical, gpu_key, parse_gpu_list, resolve, vram_gb


@pytest.mark.parametrize("text", ["4090", "rtx4090", "RTX 4090", "rtx_4090", "GeForce RTX 4090"])
def test_user_spellings_of_a_4090_all_mean_rtx_4090(text: str) -> None:
    sel = resolve(text)
    assert sel.model.name == "RTX 4090"
    assert sel.matches("RTX 4090")
    assert not sel.matches("RTX 4090D")


def test_4090_d_is_its_own_model() -> None:
    assert resolve("RTX 4090 D").matches("RTX 4090D")
    assert not resolve("RTX 4090 D").matches("RTX 4090")


def test_a100_matches_every_variant_but_a_variant_only_itself() -> None:
    family = resolve("A100")
    assert all(family.matches(v) for v in ["A100 PCIE", "A100 SXM4", "A100X"])
    sxm = resolve("a100 sxm4")
    assert sxm.matches("A100 SXM4") and not sxm.matches("A100 PCIE")


def test_unknown_gpu_is_a_usage_error_with_suggestions() -> None:
    with pytest.raises(UsageError, match=r"did you mean.*RTX 4090"):
        resolve("RTX 4091")


def test_comma_lists_and_repeats() -> None:
    names = [s.model.name for s in parse_gpu_list(["4090,3090", "A6000"])]
    assert names == ["RTX 4090", "RTX 3090", "RTX A6000"]


def test_canonical_names_of_provider_spellings() -> None:
    assert canonical("A100 SXM4") == "A100"
    assert canonical("RTX 6000Ada") == "RTX 6000 Ada"
    assert canonical("Some Future GPU") == "Some Future GPU"
    assert gpu_key("geforcertx4090-pcie-24gb") == "rtx4090pcie"
    assert canonical("geforcertx4090-pcie-24gb") == "RTX 4090"


# TensorDock model ids ("v0Name"), Vast.ai names and nvidia-smi names: one model, one VRAM
SAME_MODEL = [
    ("geforcertx4090-pcie-24gb", "RTX 4090", "RTX 4090", 24.6),
    ("geforcertx3090-pcie-24gb", "RTX 3090", "RTX 3090", 24.6),
    ("geforcertx3090ti-pcie-24gb", "RTX 3090 Ti", "RTX 3090 Ti", 24.6),
    ("geforcertx4080-pcie-16gb", "RTX 4080", "RTX 4080", 16.4),
    ("geforcertx3080-pcie-10gb", "RTX 3080", "RTX 3080", 10.2),
    ("geforcertx3060ti-pcie-8gb", "RTX 3060 Ti", "RTX 3060 Ti", 8.6),
    ("geforcegtx1070-pcie-8gb", None, "GTX 1070", 8.6),
    ("rtxa6000-pcie-48gb", "RTX A6000", "RTX A6000", 49.1),
    ("rtxa5000-pcie-24gb", "RTX A5000", "RTX A5000", 24.6),
    ("rtxa4000-pcie-16gb", "RTX A4000", "RTX A4000", 16.4),
    ("adartxa5000-pcie-32gb", "RTX 5000Ada", "RTX 5000 Ada", 32.8),
    ("adartxa4000-pcie-20gb", "RTX 4000Ada", "RTX 4000 Ada", 20.5),
    ("rtx6000ada-pcie-48gb", "RTX 6000Ada", "RTX 6000 Ada", 49.1),
    ("quadrortx8000-pcie-48gb", "Quadro RTX 8000", "Quadro RTX 8000", 49.1),
    ("a100-pcie-80gb", "A100 PCIE", "A100", 81.9),
    ("a100-sxm4-80gb", "A100 SXM4", "A100", 81.9),
    ("h100-sxm5-80gb", "H100 SXM", "H100", 81.6),
    ("h100-pcie-80gb", "H100 PCIE", "H100", 81.6),
    ("l40-pcie-48gb", "L40", "L40", 46.1),
    ("l40s-pcie-48gb", "L40S", "L40S", 46.1),
    ("v100-sxm2-16gb", "V100 SXM2", "Tesla V100", 16.9),
    ("v100-pcie-16gb", "V100 PCIE", "Tesla V100", 16.9),
]


@pytest.mark.parametrize(("tensordock", "vast", "model", "vram"), SAME_MODEL, ids=lambda v: str(v))
def test_tensordock_names_resolve_like_vast_names(
    tensordock: str, vast: str | None, model: str, vram: float
) -> None:
    assert canonical(tensordock) == model
    assert vram_gb(tensordock) == vram
    assert resolve(model).matches(tensordock)
    if vast is not None:
        assert canonical(vast) == model
        assert vram_gb(vast) == vram
        # the variant names one form factor in both spellings
        assert resolve(vast).matches(tensordock)


def test_variants_keep_their_form_factor_across_providers() -> None:
    assert resolve("H100 SXM").matches("h100-sxm5-80gb")
    assert not resolve("H100 PCIE").matches("h100-sxm5-80gb")
    assert not resolve("A100 SXM4").matches("a100-pcie-80gb")
    assert not resolve("4090").matches("geforcertx4090d-pcie-24gb")
    assert resolve("h100-sxm5-80gb").variants == ("H100 SXM",)


def test_memory_stated_in_the_name_wins_when_it_is_not_the_usual_size() -> None:
    assert vram_gb("a100-pcie-40gb") == 41.0  # Vast lists 40960 MB
    assert vram_gb("geforcertx4060ti-pcie-8gb") == 8.2
    assert vram_gb("some-future-gpu-96gb") == 98.3
    assert vram_gb("Some Future GPU") is None


@pytest.mark.parametrize(
    ("driver", "model"),
    [
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla V100-SXM2-16GB", "Tesla V100"),
        ("Tesla T4", "Tesla T4"),
    ],
)
def test_driver_names_resolve(driver: str, model: str) -> None:
    """What nvidia-smi prints on a host must match its offer (host verification)."""
    assert canonical(driver) == model
