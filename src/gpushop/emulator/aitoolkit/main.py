"""`python run.py CONFIG [CONFIG...] [-r] [-n NAME] [-l LOG]`, as ai-toolkit's run.py: loads
`.env` from the ai-toolkit folder, runs the jobs in turn, prints `Error running job: ...` and
the result block, and exits 1 with a traceback on stderr when a job fails (unless -r)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import config, trainer
from .errors import JobError


class Output:
    """Line-buffered stdout (and the -l log file): each line is flushed as it is printed."""

    def __init__(self, log_path: str | None) -> None:
        self.log_path = log_path

    def say(self, text: str = "") -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self._log(text + "\n")

    def err(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()
        self._log(text)

    def _log(self, text: str) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(text)


def load_dotenv(path: Path) -> None:
    """python-dotenv's defaults: KEY=VALUE lines, `export` allowed, quotes stripped, variables
    already in the environment win."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key and key not in os.environ:
            os.environ[key] = value


def end_message(out: Output, completed: int, failed: int) -> None:
    out.say()
    out.say("========================================")
    out.say("Result:")
    out.say(f" - {completed} completed job{'' if completed == 1 else 's'}")
    if failed:
        out.say(f" - {failed} failure{'' if failed == 1 else 's'}")
    out.say("========================================")


def main(argv: list[str], root: str) -> int:
    parser = argparse.ArgumentParser(prog="run.py")
    parser.add_argument("config_file_list", nargs="+", type=str)
    parser.add_argument("-r", "--recover", action="store_true")
    parser.add_argument("-n", "--name", type=str, default=None)
    parser.add_argument("-l", "--log", type=str, default=None)
    args = parser.parse_args(argv)
    load_dotenv(Path(root) / ".env")
    os.environ.setdefault("HF_HUB_ENABLE_HF_TRANSFER", "1")
    out = Output(args.log)
    files = args.config_file_list
    out.say(f"Running {len(files)} job{'' if len(files) == 1 else 's'}")
    completed = failed = 0
    for config_file in files:
        try:
            job = config.load(config_file, args.name, root)
            trainer.run(job, out, dict(os.environ))
            completed += 1
        except JobError as exc:
            out.say(f"Error running job: {exc}")
            failed += 1
            if not args.recover:
                end_message(out, completed, failed)
                out.err(exc.traceback(root))
                return 1
    end_message(out, completed, failed)
    return 0
