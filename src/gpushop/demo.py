"""``make demo``: the seeds' shopping case against the built-in emulator, no key, no network.

Later issues extend it to the whole story (rent, train, download, release).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time


def _step(title: str) -> None:
    from gpushop.cli.render import console

    console().rule(f"[bold]{title}")


def main() -> int:
    from gpushop.cli.app import main as cli
    from gpushop.emulator.config import EmulatorConfig
    from gpushop.emulator.server import EmulatorThread

    with (
        tempfile.TemporaryDirectory(prefix="gpushop-demo-") as home,
        EmulatorThread(EmulatorConfig(offers=600, seed=2026, rate_limit=True)) as emu,
    ):
        os.environ.update(
            {
                "VASTAI_URL": emu.url,
                "VASTAI_API_KEY": emu.api_key,
                "GPUSHOP_CACHE_DIR": os.path.join(home, "cache"),
                "GPUSHOP_CONFIG_DIR": os.path.join(home, "config"),
                "GPUSHOP_DATA_DIR": os.path.join(home, "data"),
            }
        )
        print(f"Vast.ai emulator at {emu.url}: 600 synthetic offers, real rate limits on.\n")
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
            run(
                "The same for one RTX 4090, cheapest first, as JSON for a script",
                [
                    "offers",
                    "--gpu",
                    "4090",
                    "--num-gpus",
                    "1",
                    "--sort",
                    "price",
                    "--limit",
                    "1",
                    "--json",
                ],
            ),
        ]
        _step("Summary")
        for name, elapsed, calls in timings:
            print(f"  gpushop {name:<8} {elapsed:6.2f} s  {calls} API call(s)")
        print(
            "\nThe market snapshot is cached for 60 s, so the offers searches cost one call each."
            "\nNext issues: gpushop up / run / train flux-lora / down on this same emulator."
        )
        return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
