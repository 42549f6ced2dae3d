"""`python -m gpushop.emulator`: the Vast.ai and TensorDock emulator without the gpushop CLI."""

from __future__ import annotations

import argparse
import sys

from gpushop.emulator.config import MAX_OFFERS, SFTP_CHOICES, EmulatorConfig
from gpushop.emulator.server import serve


def main(argv: list[str] | None = None) -> int:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m gpushop.emulator",
        description="Serve an offline emulator of the Vast.ai REST API and of TensorDock API v2. "
        "Prints VASTAI_URL, VASTAI_API_KEY, TENSORDOCK_URL and TENSORDOCK_API_TOKEN on stdout, "
        "then logs to stderr.",
    )
    parser.add_argument(
        "--host", default=defaults.host, help="address to bind (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument(
        "--offers", type=int, default=defaults.offers, help=f"market size, at most {MAX_OFFERS}"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="market seed")
    parser.add_argument("--api-key", default=defaults.api_key, help="the accepted API key")
    parser.add_argument(
        "--tensordock-token",
        default=defaults.tensordock_token,
        help="the accepted TensorDock Bearer token",
    )
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="turn the real per-endpoint limits off"
    )
    parser.add_argument(
        "--speed", type=float, default=defaults.speed, help="divide simulated delays by this"
    )
    parser.add_argument(
        "--no-ssh",
        action="store_true",
        help="no SSH endpoints and no sandboxes (for big fleets: ports are then only numbers)",
    )
    parser.add_argument(
        "--sftp",
        choices=SFTP_CHOICES,
        default=defaults.sftp,
        help="SFTP inside instances: OpenSSH's sftp-server where installed, or asyncssh's",
    )
    args = parser.parse_args(argv)
    try:
        config = EmulatorConfig(
            host=args.host,
            port=args.port,
            offers=args.offers,
            seed=args.seed,
            api_key=args.api_key,
            tensordock_token=args.tensordock_token,
            rate_limit=not args.no_rate_limit,
            speed=args.speed,
            ssh=not args.no_ssh,
            sftp=args.sftp,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(config)
    except OSError as exc:
        print(
            f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
