"""``make demo``: the whole story against the built-in emulator, no key, no network.

The market, the seeds' shopping case, then a FLUX LoRA trained with the emulator's simulated
ai-toolkit: rent the best reliable offer, upload a tiny dataset, train, download the LoRA,
release; then the rental and its cost, and a check that no instance is left (`gpushop jobs`,
`gpushop timings` have the job and the per-phase timings; the job's summary line has this run's).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from gpushop.recipes.sample_data import write_sample_dataset

SPEED = 200.0  # the emulator's clock: a 30-minute training run takes seconds


def _step(title: str) -> None:
    from gpushop.cli.render import console

    console().rule(f"[bold]{title}")


def main() -> int:
    from gpushop.cli.app import main as cli
    from gpushop.emulator.config import EmulatorConfig
    from gpushop.emulator.server import EmulatorThread

    with (
        tempfile.TemporaryDirectory(prefix="gpushop-demo-") as home,
        EmulatorThread(EmulatorConfig(offers=600, seed=2026, rate_limit=True, speed=SPEED)) as emu,
    ):
        os.environ.update(
            {
                "VASTAI_URL": emu.url,
                "VASTAI_API_KEY": emu.api_key,
                "TENSORDOCK_URL": emu.tensordock_url,
                "TENSORDOCK_API_TOKEN": emu.tensordock_token,
                "GPUSHOP_CACHE_DIR": os.path.join(home, "cache"),
                "GPUSHOP_CONFIG_DIR": os.path.join(home, "config"),
                "GPUSHOP_DATA_DIR": os.path.join(home, "data"),
                # the simulated FLUX.1-dev is gated like the real one; this fake token goes to
                # the instance over SSH only, as a real one would
                "HF_TOKEN": "hf_demo_not_a_real_token",
            }
        )
        os.chdir(home)
        dataset = write_sample_dataset(Path(home) / "dataset", count=6)
        print(
            f"Vast.ai and TensorDock emulator at {emu.url}: 600 synthetic Vast.ai offers and a "
            "TensorDock market of hostnodes, real rate limits on, "
            f"its clock {SPEED:g}x faster than real time.\n"
        )
        timings: list[tuple[str, float, int]] = []

        def run(title: str, argv: list[str]) -> int:
            _step(title)
            print(f"$ gpushop {' '.join(argv)}", flush=True)
            before = sum(emu.control.state()["request_counts"].values())
            started = time.perf_counter()
            code = cli(argv)
            elapsed = time.perf_counter() - started
            calls = sum(emu.control.state()["request_counts"].values()) - before
            timings.append((" ".join(argv[:1]), elapsed, calls))
            print(f"[exit {code}, {elapsed:.2f} s, {calls} API call(s)]\n", flush=True)
            return code

        codes = [
            run("The market: $/GPU/h per model, and its best reliable offer", ["market"]),
            run(
                "The seeds' case: >= 24 GB VRAM, reliability >= 0.98, best value at market price",
                ["offers", "--min-vram", "24", "--min-reliability", "0.98", "--limit", "8"],
            ),
        ]
        codes.append(
            run(
                "Train a FLUX LoRA: plan, rent, upload, train, download, release",
                [
                    "train",
                    "flux-lora",
                    "--dataset",
                    str(dataset),
                    "--name",
                    "demo_lora",
                    "--trigger",
                    "gpushopdemo",
                    "--steps",
                    "1000",
                    "--save-every",
                    "250",
                    "--out",
                    str(Path(home) / "lora"),
                    "--yes",
                ],
            )
        )
        codes.append(run("Rentals: released, what it cost, none left", ["ps", "--all"]))
        left = [
            i for i in emu.control.state()["instances"] if i.get("actual_status") != "destroyed"
        ] + [v for v in emu.control.tensordock_state()["vms"] if v.get("status") != "deleted"]
        _step("Summary")
        for name, elapsed, calls in timings:
            print(f"  gpushop {name:<8} {elapsed:6.2f} s  {calls} API call(s)")
        lora = Path(home) / "lora" / "demo_lora.safetensors"
        if lora.exists():
            print(f"\n  LoRA downloaded and verified: {lora.name}, {lora.stat().st_size:,} bytes")
        print(f"  instances left on the emulator: {len(left)}")
        return 0 if all(c == 0 for c in codes) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
