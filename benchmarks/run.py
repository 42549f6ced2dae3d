"""``make bench``: every benchmark, with figures and ratios against baselines measured in the
same run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_client
import bench_emulator
import bench_job_log
import bench_reads_redis
import bench_rentals
import bench_sandbox
import bench_serve
import bench_transfer
import bench_webhooks


def main() -> int:
    client = bench_client.run()
    r = client["rank_20k"]
    print("== parse, normalise and rank 20,000 offers (in-process, best of 5)")
    print(f"   payload {r['payload_mb']:.1f} MB, {r['offers']} offers")
    print(f"   baseline json.loads:        {r['json_loads_ms']:8.1f} ms")
    print(
        f"   gpushop parse+normalise+rank: {r['parse_normalise_rank_ms']:6.1f} ms"
        f"  ({r['ratio']:.2f}x the baseline)"
    )
    c = client["cli"]
    print(f"== whole process, same query on the same emulator (median of {c['runs']} runs)")
    print(f"   vastai search offers --raw (official 1.9.1): {c['vastai_s'] * 1e3:7.0f} ms")
    print(
        f"   gpushop offers --json, cache cold:           {c['gpushop_cold_s'] * 1e3:7.0f} ms"
        f"  ({c['cold_ratio']:.2f}x; goal <= 1.0x, stretch 0.7x)"
    )
    print(
        f"   gpushop offers --json, cache warm:           {c['gpushop_warm_s'] * 1e3:7.0f} ms"
        f"  ({c['warm_ratio']:.2f}x)"
    )
    print("== emulator search throughput, 20,000 offers")
    bench_emulator.main() if hasattr(bench_emulator, "main") else print(bench_emulator.run())
    bench_rentals.main()
    bench_sandbox.main()
    bench_transfer.main([])
    bench_serve.main([])
    bench_webhooks.main([])
    bench_job_log.main([])
    bench_reads_redis.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
