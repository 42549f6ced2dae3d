import pytest

from gpushop.errors import UsageError
from gpushop.gpus import canonical, gpu_key, parse_gpu_list, resolve


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
