"""The flux-lora recipe's pure parts: spec validation, the ai-toolkit config, disk and time
estimates, the plan, images and CUDA floors, and reading ai-toolkit's progress and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import offer

from gpushop.errors import UsageError
from gpushop.models import OfferQuery
from gpushop.recipes import (
    DEFAULT_IMAGE,
    Dataset,
    DiskEstimate,
    DiskPart,
    FluxLoraSpec,
    ImageFile,
    TrainPlan,
    build_config,
    config_yaml,
    cuda_from_tag,
    estimate_disk,
    estimate_run,
    last_progress,
    last_step,
    needs_hf_token,
    newest_checkpoint,
    offer_needs,
    parse_resolutions,
    recipe_image,
    steps_lost,
)
from gpushop.recipes.images import PYTORCH_AITOOLKIT

# The key skeleton of ai-toolkit's config/examples/train_lora_flux_24gb.yaml (anchors (c)).
PROCESS_KEYS = {
    "type",
    "training_folder",
    "device",
    "trigger_word",
    "network",
    "save",
    "datasets",
    "train",
    "model",
    "sample",
}
NETWORK_KEYS = {"type", "linear", "linear_alpha"}
SAVE_KEYS = {"dtype", "save_every", "max_step_saves_to_keep", "push_to_hub"}
DATASET_KEYS = {
    "folder_path",
    "caption_ext",
    "caption_dropout_rate",
    "shuffle_tokens",
    "cache_latents_to_disk",
    "resolution",
}
TRAIN_KEYS = {
    "batch_size",
    "steps",
    "gradient_accumulation_steps",
    "train_unet",
    "train_text_encoder",
    "gradient_checkpointing",
    "noise_scheduler",
    "optimizer",
    "lr",
    "ema_config",
    "dtype",
}
MODEL_KEYS = {"name_or_path", "is_flux", "quantize"}
SAMPLE_KEYS = {
    "sampler",
    "sample_every",
    "width",
    "height",
    "prompts",
    "neg",
    "seed",
    "walk_seed",
    "guidance_scale",
    "sample_steps",
}


def dataset(n: int = 24, size: int = 2_000_000) -> Dataset:
    images = tuple(
        ImageFile(f"{i}.jpg", "jpeg", 1024, 1024, size, f"{i}.txt", "p3r5on") for i in range(n)
    )
    return Dataset(Path("/data/ds"), images, caption_bytes=n * 10)


def process_of(config: dict[str, Any]) -> dict[str, Any]:
    (process,) = config["config"]["process"]
    assert isinstance(process, dict)
    return process


# -- the spec ---------------------------------------------------------------------------------


def test_defaults_are_the_issue_s() -> None:
    spec = FluxLoraSpec(name="me")
    assert (spec.steps, spec.rank, spec.lr) == (2000, 16, 1e-4)
    assert spec.resolutions == (512, 768, 1024)
    assert spec.model == "black-forest-labs/FLUX.1-dev"
    assert spec.min_vram_gb == 24.0


@pytest.mark.parametrize(
    ("fields", "flag"),
    [
        ({"name": "../etc"}, "--name"),
        ({"name": "my lora"}, "--name"),
        ({"name": ""}, "--name"),
        ({"name": "x" * 65}, "--name"),
        ({"steps": 0}, "--steps"),
        ({"rank": 0}, "--rank"),
        ({"rank": 1024}, "--rank"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": 2.0}, "--lr"),
        ({"resolutions": (128,)}, "--resolution 128"),
        ({"resolutions": (512, 4096)}, "--resolution 4096"),
        ({"resolutions": ()}, "--resolution"),
        ({"trigger": "two\nlines"}, "--trigger"),
        ({"model": "not a repo"}, "--model"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_flag(fields: dict[str, Any], flag: str) -> None:
    args = {"name": "ok", **fields}
    with pytest.raises(UsageError, match=flag) as info:
        FluxLoraSpec(**args)
    assert info.value.exit_code == 2


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(UsageError) as info:
        FluxLoraSpec(name="a b", steps=0, rank=0)
    message = str(info.value)
    assert "--name" in message and "--steps" in message and "--rank" in message


def test_resolutions_parse_and_normalise() -> None:
    assert parse_resolutions("1024,512, 768") == (1024, 512, 768)
    assert FluxLoraSpec(name="a", resolutions=(1024, 512, 512)).resolutions == (512, 1024)
    with pytest.raises(UsageError, match="--resolution"):
        parse_resolutions("512,big")
    with pytest.raises(UsageError, match="at least one"):
        parse_resolutions(",")


# -- the config -------------------------------------------------------------------------------


def test_config_has_ai_toolkit_s_keys_and_our_values() -> None:
    spec = FluxLoraSpec(name="me_v1", trigger="p3r5on", steps=1500, rank=32, lr=2e-4)
    config = build_config(spec, "/workspace/datasets/me_v1", "/workspace/output")
    assert set(config) == {"job", "config", "meta"}
    assert config["job"] == "extension"
    assert config["config"]["name"] == "me_v1"
    assert config["meta"] == {"name": "[name]", "version": "1.0"}
    p = process_of(config)
    assert set(p) == PROCESS_KEYS
    assert (p["type"], p["device"], p["training_folder"]) == (
        "sd_trainer",
        "cuda:0",
        "/workspace/output",
    )
    assert p["trigger_word"] == "p3r5on"
    assert set(p["network"]) == NETWORK_KEYS
    assert p["network"] == {"type": "lora", "linear": 32, "linear_alpha": 32}
    assert set(p["save"]) == SAVE_KEYS and p["save"]["push_to_hub"] is False
    assert p["save"]["dtype"] == "float16"
    (ds,) = p["datasets"]
    assert set(ds) == DATASET_KEYS
    assert ds["folder_path"] == "/workspace/datasets/me_v1" and ds["caption_ext"] == "txt"
    assert ds["resolution"] == [512, 768, 1024] and ds["cache_latents_to_disk"] is True
    assert set(p["train"]) == TRAIN_KEYS
    t = p["train"]
    assert (t["steps"], t["lr"], t["batch_size"]) == (1500, 2e-4, 1)
    assert (t["noise_scheduler"], t["optimizer"], t["dtype"]) == ("flowmatch", "adamw8bit", "bf16")
    assert t["ema_config"] == {"use_ema": True, "ema_decay": 0.99}
    assert set(p["model"]) == MODEL_KEYS
    assert p["model"] == {
        "name_or_path": "black-forest-labs/FLUX.1-dev",
        "is_flux": True,
        "quantize": True,
    }
    s = p["sample"]
    assert set(s) == SAMPLE_KEYS
    assert s["sampler"] == t["noise_scheduler"]  # ai-toolkit: must match
    assert (s["guidance_scale"], s["sample_steps"], s["width"], s["height"]) == (4, 20, 1024, 1024)
    assert all("[trigger]" in prompt for prompt in s["prompts"])


def test_without_a_trigger_there_is_no_trigger_word_nor_trigger_in_prompts() -> None:
    p = process_of(build_config(FluxLoraSpec(name="me"), "/d", "/o"))
    assert "trigger_word" not in p
    assert not any("[trigger]" in prompt for prompt in p["sample"]["prompts"])


def test_schnell_gets_its_adapter_guidance_1_and_4_steps() -> None:
    spec = FluxLoraSpec(name="s", model="black-forest-labs/FLUX.1-schnell")
    p = process_of(build_config(spec, "/d", "/o"))
    assert p["model"]["assistant_lora_path"] == "ostris/FLUX.1-schnell-training-adapter"
    assert (p["sample"]["guidance_scale"], p["sample"]["sample_steps"]) == (1, 4)


def test_options_reach_the_config() -> None:
    spec = FluxLoraSpec(
        name="o", low_vram=True, quantize=False, sample_every=None, max_saves=2, save_every=100
    )
    p = process_of(build_config(spec, "/d", "/o"))
    assert p["model"]["low_vram"] is True and p["model"]["quantize"] is False
    assert p["train"]["disable_sampling"] is True
    assert (p["save"]["save_every"], p["save"]["max_step_saves_to_keep"]) == (100, 2)
    assert spec.min_vram_gb == 48.0  # unquantized bf16 does not fit 24 GB


def test_yaml_round_trips_with_floats_and_bracketed_strings_intact() -> None:
    spec = FluxLoraSpec(name="me", trigger="p3r5on", lr=1e-5)
    config = build_config(spec, "/d", "/o")
    text = config_yaml(config)
    assert yaml.safe_load(text) == config
    loaded = process_of(yaml.safe_load(text))
    assert isinstance(loaded["train"]["lr"], float)  # "1e-5" would load as a string
    assert loaded["sample"]["prompts"][0].startswith("[trigger]")
    assert text.index("job:") < text.index("config:") < text.index("meta:")  # order kept


def test_only_the_gated_flux_models_need_a_token() -> None:
    assert needs_hf_token("black-forest-labs/FLUX.1-dev")
    assert needs_hf_token("black-forest-labs/FLUX.1-Kontext-dev")
    assert not needs_hf_token("black-forest-labs/FLUX.1-schnell")
    assert not needs_hf_token("ostris/Flex.1-alpha")
    assert not needs_hf_token("/models/flux-dev")


# -- disk -------------------------------------------------------------------------------------


def test_flux_dev_needs_more_than_the_32_gb_default_and_says_why() -> None:
    disk = estimate_disk(FluxLoraSpec(name="me"), dataset())
    parts = {p.label: p.gb for p in disk.parts}
    assert parts["model"] > 30  # FLUX.1-dev alone
    assert parts["image"] == 15.0
    assert disk.estimate_gb > 32 and disk.disk_gb == disk.estimate_gb
    assert disk.disk_gb >= (sum(parts.values()) * 1.2)
    lines = disk.explain()
    assert lines[0] == (
        f"{disk.disk_gb} GB: the estimated need ({disk.estimate_gb} GB) is above the 32 GB default"
    )
    text = "\n".join(lines)
    for label in ("image", "model", "dataset", "latent cache", "checkpoints", "samples", "margin"):
        assert f"  {label} " in text
    assert "transformer 23.8 + T5-XXL 9.5" in text


def test_the_floor_wins_when_the_estimate_is_smaller() -> None:
    disk = DiskEstimate((DiskPart("image", 5.0, "small"), DiskPart("model", 10.0, "small")))
    assert disk.estimate_gb == 18 and disk.disk_gb == 32
    assert disk.why() == "32 GB: the default, enough for the estimated need (18 GB)"


def test_disk_grows_with_rank_saves_dataset_and_the_install_image() -> None:
    base = estimate_disk(FluxLoraSpec(name="me"), dataset())
    big_rank = estimate_disk(FluxLoraSpec(name="me", rank=128, max_saves=10), dataset())
    big_data = estimate_disk(FluxLoraSpec(name="me"), dataset(n=400, size=20_000_000))
    on_pytorch = estimate_disk(FluxLoraSpec(name="me"), dataset(), PYTORCH_AITOOLKIT)

    def part(d: DiskEstimate, label: str) -> float:
        return next(p.gb for p in d.parts if p.label == label)

    assert part(big_rank, "checkpoints") > 10 * part(base, "checkpoints")
    assert part(big_data, "dataset") == pytest.approx(400 * 20e6 / 1e9, rel=0.01)
    assert big_data.disk_gb > base.disk_gb + 8
    assert {p.label for p in on_pytorch.parts} >= {"setup"}
    assert part(on_pytorch, "image") < part(base, "image")


# -- time and the plan ------------------------------------------------------------------------


def test_run_estimates_follow_gpu_speed_steps_and_resolution() -> None:
    spec = FluxLoraSpec(name="me")
    on_4090 = estimate_run(spec, "RTX 4090", images=24, inet_down_mbps=1000)
    on_3090 = estimate_run(spec, "rtx3090", images=24, inet_down_mbps=1000)
    on_h100 = estimate_run(spec, "H100 SXM", images=24, inet_down_mbps=1000)
    assert on_h100.seconds < on_4090.seconds < on_3090.seconds
    assert on_4090.gpu_known and on_4090.gpu_name == "RTX 4090"

    def training(r: Any) -> float:
        return dict(r.parts)["training"]

    longer = estimate_run(FluxLoraSpec(name="me", steps=4000), "RTX 4090", images=24)
    assert training(longer) == pytest.approx(2 * training(on_4090))
    small = estimate_run(FluxLoraSpec(name="me", resolutions=(512,)), "RTX 4090")
    large = estimate_run(FluxLoraSpec(name="me", resolutions=(1024,)), "RTX 4090")
    assert large.seconds_per_step == pytest.approx(1.5)  # the table's 1024 px figure
    assert small.seconds_per_step < 0.5 * large.seconds_per_step
    # 2000 steps, 3 resolutions, on a 4090: between half an hour and two hours in all
    assert 1800 < on_4090.seconds < 7200
    assert on_4090.max_duration_s() > on_4090.seconds


def test_slow_download_and_unknown_gpu_show_in_the_explanation() -> None:
    spec = FluxLoraSpec(name="me")
    slow = estimate_run(spec, "Tesla P40", images=24, inet_down_mbps=100)
    fast = estimate_run(spec, "Tesla P40", images=24, inet_down_mbps=2000)
    assert dict(slow.parts)["model download"] > 5 * dict(fast.parts)["model download"]
    assert not slow.gpu_known
    first = slow.explain()[0]
    assert first.startswith("~") and "unknown GPU: counted as an RTX 3090" in first
    assert any(line.strip().startswith("model download") for line in slow.explain())


def test_no_sampling_saves_time() -> None:
    with_samples = estimate_run(FluxLoraSpec(name="me"), "RTX 4090")
    without = estimate_run(FluxLoraSpec(name="me", sample_every=None), "RTX 4090")
    assert dict(without.parts)["samples"] == 0
    assert without.seconds < with_samples.seconds


def test_the_plan_shows_offer_disk_time_and_cost_before_renting() -> None:
    spec = FluxLoraSpec(name="me", trigger="p3r5on")
    ds = dataset()
    disk = estimate_disk(spec, ds)
    o = offer("123", 0.40, 0.995, disk_gb=float(disk.disk_gb), cuda=13.0)
    run = estimate_run(spec, o.gpu_name, images=len(ds), inet_down_mbps=o.inet_down_mbps)
    plan = TrainPlan(spec, ds, o, disk, run)
    assert plan.cost_usd == pytest.approx(0.40 * run.seconds / 3600)
    text = "\n".join(plan.lines())
    assert "vastai:123" in text and "RTX 4090" in text
    assert "needs >= 13" in text
    assert disk.why() in text
    assert f"~${plan.cost_usd:.2f}" in text
    assert "HF_TOKEN is needed" in text
    assert "priced for" not in text
    data = plan.to_json()
    assert data["disk_gb"] == disk.disk_gb and data["needs_hf_token"] is True
    assert data["estimated_cost_usd"] == round(plan.cost_usd, 2)


def test_the_plan_warns_when_the_offer_was_priced_for_less_disk() -> None:
    spec = FluxLoraSpec(name="me", model="black-forest-labs/FLUX.1-schnell")
    ds = dataset()
    disk = estimate_disk(spec, ds)
    plan = TrainPlan(spec, ds, offer("9", 0.3, 0.99), disk, estimate_run(spec, "RTX 4090"))
    text = "\n".join(plan.lines())
    assert f"priced for 32 GB of disk, {disk.disk_gb} GB will be rented" in text
    assert "HF_TOKEN" not in text  # schnell is not gated


def test_offer_needs_raise_the_query_to_the_recipe_s_floor() -> None:
    spec = FluxLoraSpec(name="me")
    disk = estimate_disk(spec, dataset())
    needs = offer_needs(spec, disk)
    assert (needs.min_vram_gb, needs.min_reliability, needs.min_cuda) == (24.0, 0.98, 13.0)
    raised = needs.apply(OfferQuery(min_vram_gb=16, disk_gb=32))
    assert (raised.min_vram_gb, raised.min_cuda, raised.disk_gb) == (24.0, 13.0, disk.disk_gb)
    kept = needs.apply(OfferQuery(min_vram_gb=80, min_cuda=13.1, disk_gb=500))
    assert (kept.min_vram_gb, kept.min_cuda, kept.disk_gb) == (80, 13.1, 500)
    on_pytorch = offer_needs(spec, disk, PYTORCH_AITOOLKIT).apply(OfferQuery())
    assert on_pytorch.min_cuda == 12.8


# -- images -----------------------------------------------------------------------------------


def test_images_and_their_cuda_floor() -> None:
    assert recipe_image(None) is DEFAULT_IMAGE
    assert DEFAULT_IMAGE.image == "ostris/aitoolkit:latest" and DEFAULT_IMAGE.min_cuda == 13.0
    assert recipe_image("ostris/aitoolkit").min_cuda == 13.0
    assert recipe_image("ostris/aitoolkit:v0.7").image == "ostris/aitoolkit:v0.7"
    assert recipe_image(PYTORCH_AITOOLKIT.image) is PYTORCH_AITOOLKIT
    other = recipe_image("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime")
    assert other.min_cuda == 12.4 and "git clone" in other.setup
    assert recipe_image("myorg/trainer").min_cuda is None
    assert cuda_from_tag("nvidia/cuda:12.8.1-runtime-ubuntu22.04") == 12.8
    assert cuda_from_tag("vastai/pytorch:2.7.1-cuda-12.8.1-py312") == 12.8
    assert (
        DEFAULT_IMAGE.run_command("/w/cfg.yaml")
        == "cd /app/ai-toolkit && python run.py /w/cfg.yaml"
    )


# -- progress and checkpoints -----------------------------------------------------------------

LOG = (
    "Loading checkpoint shards: 100%|##########| 2/2 [00:03<00:00,  1.60s/it]\n"
    "Caching latents to disk: 100%|##########| 24/24 [00:05<00:00,  4.61it/s]\n"
    "\x1b[32mme_v1:   0%|          | 0/2000 [00:00<?, ?it/s]\x1b[0m\r"
    "me_v1:  12%|#2        | 249/2000 [06:10<43:30,  1.49s/it, lr: 1.0e-04 loss: 4.123e-01]\r"
    "me_v1:  12%|#2        | 250/2000 [06:12<43:28,  1.49s/it, lr: 1.0e-04 loss: 3.990e-01]\n"
    "Saving at step 250\n"
    "Generating Images: 100%|##########| 4/4 [00:30<00:00,  7.50s/it]\n"
    "me_v1:  13%|#3        | 262/2000 [06:30<43:10,  1.49s/it, lr: 1.0e-04 loss: 4.001e-01]\r"
)


def test_the_last_training_step_is_read_from_bars_split_by_cr_and_lf() -> None:
    assert last_step(LOG, "me_v1") == 262
    assert last_step(LOG) == 262  # without the name: bars with lr/loss only
    bar = last_progress(LOG, "me_v1")
    assert bar is not None
    assert (bar.total, bar.loss, bar.lr) == (2000, 4.001e-01, 1e-4)
    assert bar.elapsed_s == 390 and bar.remaining_s == 43 * 60 + 10
    assert bar.seconds_per_step == pytest.approx(1.49)
    assert last_step(LOG, "other_job") is None
    assert (
        last_step("Caching latents to disk: 50%|#####     | 12/24 [00:02<00:02, 4.6it/s]") is None
    )
    fast = "me:  12%|#2        | 250/2000 [00:30<03:30,  8.33it/s, lr: 1.0e-04 loss: 4.123e-01]"
    progress = last_progress(fast, "me")
    assert progress is not None and progress.seconds_per_step == pytest.approx(0.12, abs=0.001)


def test_the_newest_checkpoint_is_the_highest_step_of_this_job() -> None:
    names = [
        "output/me_v1/me_v1_000000250.safetensors",
        "output/me_v1/me_v1_000001000.safetensors",
        "output/me_v1/me_v1_000000500.safetensors",
        "output/me_v1/other_000009000.safetensors",
        "output/me_v1/optimizer.pt",
        "output/me_v1/config.yaml",
    ]
    assert newest_checkpoint(names, "me_v1") == ("me_v1_000001000.safetensors", 1000)
    assert newest_checkpoint(names) == ("other_000009000.safetensors", 9000)
    assert newest_checkpoint(["me_v1.safetensors"], "me_v1") is None


def test_steps_lost_is_what_a_restart_would_redo() -> None:
    ckpts = ["me_v1_000000250.safetensors"]
    assert steps_lost(LOG, ckpts, "me_v1") == 12
    assert steps_lost(730, ["me_v1_000000250.safetensors", "me_v1_000000500.safetensors"]) == 230
    assert steps_lost(LOG, [], "me_v1") == 262  # nothing saved yet: all of it
    assert steps_lost(LOG, [*ckpts, "me_v1.safetensors"], "me_v1") == 0  # finished
    assert steps_lost("no progress yet", ckpts, "me_v1") == 0
    assert steps_lost(None, ckpts) == 0


def test_bars_with_hours_and_an_unknown_rate_parse() -> None:
    first = last_progress("me:   0%|          | 0/2000 [00:00<?, ?it/s]", "me")
    assert first is not None and first.step == 0
    assert first.remaining_s is None and first.seconds_per_step is None
    late = last_progress(
        "2026-03-01 10:00:00 me:  90%|######### | 1800/2000 [1:02:03<6:51,  2.06s/it, lr: 1.0e-04]",
        "me",
    )
    assert late is not None and late.step == 1800 and late.elapsed_s == 3723
