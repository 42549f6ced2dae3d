"""What goes back to a new instance when a lost ai-toolkit run resumes, and where the trainer
says it started: the newest whole checkpoint and the optimizer state, nothing else."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from gpushop.recipes.aitoolkit import choose_resume, resumed_step

NAME = "my_lora"


def save(folder: Path, file: str, step: int | None, *, truncate: bool = False) -> Path:
    """A LoRA save as ai-toolkit writes it: its step in the ``training_info`` metadata."""
    metadata = {"name": NAME}
    if step is not None:
        metadata["training_info"] = json.dumps({"step": step, "epoch": 0})
    data = bytes(4 * 8)
    header = {
        "__metadata__": metadata,
        "lora_A.weight": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    blob = struct.pack("<Q", len(text)) + text + data
    path = folder / file
    path.write_bytes(blob[:-10] if truncate else blob)
    return path


def ckpt(step: int) -> str:
    return f"{NAME}_{step:09d}.safetensors"


LOG = "my_lora:  32%|###2      | 637/2000 [10:37<22:43,  1.00it/s, lr: 1.0e-04 loss: 3.1e-01]\n"


def test_only_the_newest_checkpoint_and_the_optimizer_go_back(tmp_path: Path) -> None:
    for step in (100, 450, 500, 550, 600):  # synced one by one; the instance pruned 100
        save(tmp_path, ckpt(step), step)
    (tmp_path / "optimizer.pt").write_bytes(b"PK")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "1__000000600_0.jpg").write_bytes(b"jpg")
    (tmp_path / "config.yaml").write_text("job: extension\n")
    choice = choose_resume(tmp_path, NAME, LOG)
    # the checkpoint last: nothing written after it can look newer to the trainer
    assert choice.files == ["optimizer.pt", ckpt(600)]
    assert (choice.step, choice.reached, choice.steps_lost) == (600, 637, 37)
    assert choice.describe() == (
        f"reached step 637; newest synced checkpoint: step 600 ({ckpt(600)})"
    )


def test_other_jobs_saves_never_count(tmp_path: Path) -> None:
    save(tmp_path, ckpt(2000), 2000)
    save(tmp_path, ckpt(10_000), 10_000)
    save(tmp_path, "other_000090000.safetensors", 90_000)
    assert choose_resume(tmp_path, NAME).files == [ckpt(10_000)]


def test_a_save_synced_half_written_is_passed_over(tmp_path: Path) -> None:
    save(tmp_path, ckpt(550), 550)
    save(tmp_path, ckpt(600), 600, truncate=True)  # the host hung while writing it
    choice = choose_resume(tmp_path, NAME, LOG)
    assert choice.files == [ckpt(550)] and choice.step == 550
    assert ckpt(600) in choice.describe() and "truncated" in choice.describe()


def test_the_step_the_trainer_reads_is_the_one_in_the_metadata(tmp_path: Path) -> None:
    save(tmp_path, ckpt(600), 450)  # renamed by hand: the trainer goes by its metadata
    save(tmp_path, ckpt(300), None)  # no training_info: the name's step
    assert choose_resume(tmp_path, NAME).step == 450
    (tmp_path / ckpt(600)).unlink()
    assert choose_resume(tmp_path, NAME).step == 300


def test_the_final_lora_is_the_newest_save(tmp_path: Path) -> None:
    save(tmp_path, ckpt(1950), 1950)
    save(tmp_path, f"{NAME}.safetensors", 2000)
    choice = choose_resume(tmp_path, NAME)
    assert (choice.files, choice.step) == ([f"{NAME}.safetensors"], 2000)


def test_nothing_synced_yet_starts_over(tmp_path: Path) -> None:
    (tmp_path / "optimizer.pt").write_bytes(b"PK")  # without its checkpoint it is no use
    choice = choose_resume(tmp_path, NAME, LOG)
    assert (choice.files, choice.step, choice.checkpoint, choice.steps_lost) == ([], 0, None, 637)
    assert choose_resume(tmp_path / "missing", NAME).files == []


def test_where_the_trainer_says_it_started() -> None:
    loading = "Loading transformer\nQuantizing transformer\n"
    assert resumed_step(loading, NAME) is None  # not said yet
    found = (
        "#### IMPORTANT RESUMING FROM /w/my_lora_000000450.safetensors ####\n"
        "Found step 450 in metadata, starting from there\n"
    )
    assert resumed_step(loading + found, NAME) == 450
    # no "Found step" line: the training bar shows where it started (0: from scratch)
    fresh = "my_lora:   0%|          | 0/2000 [00:00<?, ?it/s]\r"
    assert resumed_step(loading + "Caching latents to disk: 100%|#| 3/3\n" + fresh, NAME) == 0
