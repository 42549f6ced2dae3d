"""One sd_trainer process, as ai-toolkit's BaseSDTrainProcess runs it: model download and
loading, the GPU memory check, resume from the newest checkpoint, dataset scan, then the step
loop with saves (pruned to max_step_saves_to_keep), samples and the final LoRA. Time is
simulated: every phase costs its real-world seconds divided by EMULATOR_SPEED."""

from __future__ import annotations

import base64
import json
import random
import re
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

from . import gpu, hub, progress, safetensors
from .config import Job
from .errors import TRAIN_FRAMES, JobError
from .faults import Faults

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LOAD_S = 25.0  # reading the checkpoint shards from disk
QUANTIZE_S = 80.0  # qfloat8 quantization of the transformer and T5
SAVE_S = 2.0
LATENT_S = 0.25  # per image, caching latents
SAMPLE_STEP_FRACTION = 0.5  # one sampling step vs one training step
LORA_WIDTH = {True: 3072, False: 1280}  # FLUX hidden size, else SD-sized
CUDA_FAILURE = (
    "CUDA error: unspecified launch failure\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
)
# A 16x16 JPEG: samples are real images, just tiny.
SAMPLE_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+MzZGNyw"
    "tQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09PT09PT09PT09PT09"
    "PT09PT09PT09PT09PT09PT09PT0//wAARCAAQABADASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAABQb/xAAYEAA"
    "CAwAAAAAAAAAAAAAAAAAABAUiMf/EABUBAQEAAAAAAAAAAAAAAAAAAAAC/8QAGhEAAgIDAAAAAAAAAAAAAAAAAAUDBCE"
    "xYf/aAAwDAQACEQMRAD8AmFY7Ki6sdlRdWOyowrHZUqe90KmOsn//2Q=="
)


class Clock:
    """Simulated seconds, paced against the wall clock at `speed` x (never drifting: a slow
    print is caught up on the next wait)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.now = 0.0
        self._start = time.monotonic()

    def spend(self, seconds: float) -> None:
        self.now += seconds
        delay = self._start + self.now / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class Run:
    def __init__(self, job: Job, out: Any, env: dict[str, str]) -> None:
        self.job = job
        self.out = out
        self.env = env
        self.clock = Clock(_positive(env.get("EMULATOR_SPEED"), 1.0))
        self.faults = Faults()
        self.root = job.save_root
        self.tensors: dict[str, safetensors.Tensor] = {}
        self.sampling = not job.disable_sampling

    # -- phases ------------------------------------------------------------------------------
    def header(self) -> None:
        job = self.job
        self.out.say(json.dumps(job.config["config"]["process"][0], indent=4))
        self.out.say()
        self.out.say("#############################################")
        self.out.say(f"# Running job: {job.name}")
        self.out.say("#############################################")
        self.out.say()
        self.out.say()
        self.out.say("Running  1 process")
        self.root.mkdir(parents=True, exist_ok=True)
        _write_config(self.root / "config.yaml", job.config)

    def load_model(self, card: gpu.Gpu) -> None:
        job, out = self.job, self.out
        gpu.check_device(card, job)
        out.say("Loading Flux model" if job.is_flux else "Loading model")
        if hub.is_local(job.model):
            if not Path(job.model).exists():
                raise JobError(
                    "OSError", f"Error no file named model_index.json found in {job.model}"
                )
        else:
            hub.check_access(job.model, hub.token(self.env))
            if not hub.is_cached(job.model, self.env):
                self.download()
        out.say("Loading transformer")
        self.clock.spend(LOAD_S)
        if job.quantize:
            out.say("Quantizing transformer")
            self.clock.spend(QUANTIZE_S)
        out.say("Loading vae")
        out.say("Loading t5")
        out.say("Loading checkpoint shards: 100%|##########| 2/2 [00:04<00:00,  2.10s/it]")
        if job.quantize:
            out.say("Quantizing T5")
        out.say("Loading clip")
        out.say("making pipe")
        out.say("preparing")
        if not gpu.fits(card, job):
            message = gpu.out_of_memory(card, gpu.needed_gib(job), job.device)
            raise JobError("torch.OutOfMemoryError", message, gpu.OOM_FRAMES)
        out.say(f"create LoRA network. base dim (rank): {job.rank}, alpha: {job.alpha:g}")
        out.say("neuron dropout: p=None, rank dropout: p=None, module dropout: p=None")
        out.say("create LoRA for Text Encoder: 0 modules.")
        out.say(f"create LoRA for U-Net: {494 if job.is_flux else 192} modules.")
        out.say("enable LoRA for U-Net")

    def download(self) -> None:
        gb = hub.size_gb(self.job.model)
        mbps = _positive(self.env.get("EMULATOR_INET_DOWN"), 1000.0)
        seconds = gb * 8000.0 / mbps
        self.out.say(f"Downloading {self.job.model} ({gb:.1f} GB) to {hub.cache_dir(self.env)}")
        self.clock.spend(seconds)
        files = 23
        rate = files / seconds
        speed = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
        self.out.say(
            f"Fetching {files} files: 100%|##########| {files}/{files} "
            f"[{progress.interval(seconds)}<00:00, {speed}]"
        )
        hub.mark_cached(self.job.model, self.env)

    def resume_step(self) -> int:
        """The newest checkpoint's step (ai-toolkit picks the newest `<name>*.safetensors`)."""
        files = list(self.root.glob(f"{glob_escape(self.job.name)}*.safetensors"))
        if not files:
            return 0
        latest = max(files, key=lambda p: (p.stat().st_ctime, p.name))
        self.out.say(f"#### IMPORTANT RESUMING FROM {latest} ####")
        self.out.say(f"Loading from {latest}")
        try:
            header = safetensors.read_header(latest)
        except safetensors.SafetensorError as exc:
            raise JobError("safetensors_rust.SafetensorError", str(exc)) from None
        step = 0
        info = header.get("__metadata__", {}).get("training_info")
        try:
            step = int(json.loads(info)["step"]) if info else 0
        except (ValueError, KeyError, TypeError):
            step = 0
        if step:
            self.out.say(f"Found step {step} in metadata, starting from there")
        optimizer = self.root / "optimizer.pt"
        if optimizer.exists():
            self.out.say(f"Loading optimizer state from {optimizer}")
        return step

    def scan_datasets(self) -> None:
        for dataset in self.job.datasets:
            folder = dataset.folder
            self.out.say(f"Dataset: {folder}")
            self.out.say("  -  Preprocessing image dimensions")
            if not folder.is_dir():
                raise JobError(
                    "FileNotFoundError", f"[Errno 2] No such file or directory: '{folder}'"
                )
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise JobError(
                    "ValueError",
                    f"No images found in {folder}: a dataset is .jpg/.jpeg/.png files, each "
                    f"with a .{dataset.caption_ext} caption of the same name",
                )
            missing = [
                p.name for p in images if not p.with_suffix("." + dataset.caption_ext).is_file()
            ]
            if missing:
                raise JobError(
                    "ValueError",
                    f"{len(missing)} image(s) in {folder} have no .{dataset.caption_ext} caption "
                    f"file of the same name, e.g. {missing[0]}",
                )
            self.out.say(f"  -  Found {len(images)} images")
            for size in dataset.resolutions:
                self.out.say(f"Bucket sizes for {folder}:")
                self.out.say(f"{size}x{size}: {len(images)} files")
                self.out.say("1 buckets made")
            self.out.say(f"Caching latents for {folder}")
            self.out.say(" - Saving latents to disk")
            self.clock.spend(LATENT_S * len(images) * len(dataset.resolutions))
            self.out.say(f"Caching latents to disk: 100%|##########| {len(images)}/{len(images)}")

    # -- the loop ----------------------------------------------------------------------------
    def train(self, card: gpu.Gpu, start: int) -> None:
        job = self.job
        per_step = gpu.seconds_per_step(card, job)
        self.tensors = safetensors.lora_tensors(
            job.network_type,
            job.rank,
            job.save_dtype,
            LORA_WIDTH[job.is_flux],
            zlib.crc32(job.name.encode()),
        )
        if self.sampling and start == 0 and not job.skip_first_sample:
            self.out.say("Generating baseline samples before training")
            self.sample(0, card)
        began = self.clock.now
        self.out.say(progress.line(job.name, start, job.steps, 0.0, 0))
        rng = random.Random(start)
        for step in range(start + 1, job.steps + 1):
            fail = self.faults.due(step)
            if fail == "ssh_drop":
                self.faults.drop_ssh()
            elif fail is not None:
                raise self.failure(fail, card)
            self.clock.spend(per_step)
            loss = abs(0.42 * (1.0 - 0.3 * step / job.steps) + rng.gauss(0.0, 0.04))
            postfix = f"lr: {job.lr:.1e} loss: {loss:.3e}"
            elapsed = self.clock.now - began
            self.out.say(progress.line(job.name, step, job.steps, elapsed, step - start, postfix))
            if step < job.steps and step % job.save_every == 0:
                self.save(step)
            if self.sampling and step < job.steps and step % job.sample_every == 0:
                self.sample(step, card)
        self.save(job.steps, final=True)
        if self.sampling:
            self.sample(job.steps, card)

    def failure(self, fail: str, card: gpu.Gpu) -> JobError:
        if fail == "oom":
            for attempt in (1, 2, 3):
                self.out.say(f"# OOM during training step, skipping batch {attempt}/3 #")
            message = gpu.out_of_memory(card, card.total_gib + 1.2, self.job.device)
            return JobError(
                "RuntimeError",
                "OOM during training step 3 times in a row, aborting training",
                TRAIN_FRAMES,
                cause=(f"torch.OutOfMemoryError: {message}", TRAIN_FRAMES[-1:]),
            )
        return JobError("torch.AcceleratorError", CUDA_FAILURE, TRAIN_FRAMES)

    def save(self, step: int, *, final: bool = False) -> None:
        job = self.job
        name = f"{job.name}.safetensors" if final else f"{job.name}_{step:09d}.safetensors"
        path = self.root / name
        if not final:
            self.out.say(f"Saving at step {step}")
        metadata = {
            "format": "pt",
            "name": job.name,
            "version": "1.0",
            "training_info": json.dumps({"step": step, "epoch": 0}),
            "ss_output_name": job.name,
            "ss_network_dim": str(job.rank),
            "ss_network_alpha": f"{job.alpha:g}",
            "ss_base_model_version": "flux1" if job.is_flux else "sd",
            "software": json.dumps(
                {"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit"}
            ),
        }
        safetensors.write(path, self.tensors, metadata)
        _write_optimizer(self.root / "optimizer.pt", step, job.lr)
        self.clock.spend(SAVE_S)
        self.out.say(f"Saved checkpoint to {path}")
        if not final:
            self.prune()

    def prune(self) -> None:
        pattern = re.compile(rf"^{re.escape(self.job.name)}_(\d{{9}})\.safetensors$")
        steps = sorted(
            (int(m.group(1)), p)
            for p in self.root.iterdir()
            if (m := pattern.match(p.name)) is not None
        )
        for _, path in steps[: max(0, len(steps) - self.job.keep)]:
            path.unlink(missing_ok=True)

    def sample(self, step: int, card: gpu.Gpu) -> None:
        job = self.job
        folder = self.root / "samples"
        folder.mkdir(exist_ok=True)
        self.out.say("Generating Images")
        stamp = int(time.time() * 1000)
        per_image = job.sample_steps * gpu.seconds_per_step(card, job) * SAMPLE_STEP_FRACTION
        for i, _ in enumerate(job.prompts):
            self.clock.spend(per_image)
            (folder / f"{stamp}__{step:09d}_{i}.jpg").write_bytes(SAMPLE_JPEG)


def run(job: Job, out: Any, env: dict[str, str]) -> None:
    """The whole process; raises JobError the way the real one fails."""
    current = Run(job, out, env)
    current.header()
    card = gpu.detect()
    current.load_model(card)
    start = current.resume_step()
    current.scan_datasets()
    current.train(card, start)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _positive(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default


def _write_config(path: Path, config: dict[str, Any]) -> None:
    try:
        import yaml
    except ImportError:  # ai-toolkit needs pyyaml; without it, the same content as JSON
        path.write_text(json.dumps(config, indent=2) + "\n")
        return
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _write_optimizer(path: Path, step: int, lr: float) -> None:
    """A small archive in torch.save's zip layout (the real state is GBs)."""
    state = json.dumps({"state": {}, "param_groups": [{"lr": lr, "step": step}]})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("optimizer/data.pkl", state)
        archive.writestr("optimizer/version", "3\n")
