"""Failures reported the way ai-toolkit reports them: `Error running job: <message>` on stdout,
then (on stderr) the traceback Python prints for the exception run.py re-raises."""

from __future__ import annotations

from dataclasses import dataclass, field

# (file relative to the ai-toolkit root, line, function, source line)
Frame = tuple[str, int, str, str]

RUN_FRAMES: tuple[Frame, ...] = (
    ("run.py", 120, "<module>", "main()"),
    ("run.py", 108, "main", "raise e"),
    ("run.py", 95, "main", "job.run()"),
)
JOB_FRAMES: tuple[Frame, ...] = (
    *RUN_FRAMES,
    ("jobs/ExtensionJob.py", 22, "run", "process.run()"),
)
CONFIG_FRAMES: tuple[Frame, ...] = (
    *RUN_FRAMES[:2],
    ("run.py", 93, "main", "job = get_job(config_file, args.name)"),
    ("toolkit/job.py", 28, "get_job", "config = get_config(config_path, name)"),
    ("toolkit/config.py", 101, "get_config", "return preprocess_config(config, name)"),
)
TRAIN_FRAMES: tuple[Frame, ...] = (
    *JOB_FRAMES,
    (
        "jobs/process/BaseSDTrainProcess.py",
        2141,
        "run",
        "loss_dict = self.hook_train_loop(batch_list)",
    ),
)


@dataclass
class JobError(Exception):
    """`exc_type: message` raised from `frames`; `cause` is an earlier exception text that
    Python shows first ("During handling of the above exception, ...")."""

    exc_type: str
    message: str
    frames: tuple[Frame, ...] = JOB_FRAMES
    cause: tuple[str, tuple[Frame, ...]] | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def traceback(self, root: str) -> str:
        parts: list[str] = []
        if self.cause is not None:
            text, frames = self.cause
            parts += [_block(root, frames, text), "", _DURING, ""]
        parts.append(_block(root, self.frames, f"{self.exc_type}: {self.message}"))
        return "\n".join(parts) + "\n"


_DURING = "During handling of the above exception, another exception occurred:"


def _block(root: str, frames: tuple[Frame, ...], last: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        lines.append(f'  File "{root}/{path}", line {line}, in {func}')
        lines.append(f"    {code}")
    lines.append(last)
    return "\n".join(lines)


def config_error(message: str) -> JobError:
    return JobError("ValueError", message, CONFIG_FRAMES)


def value_error(message: str) -> JobError:
    return JobError("ValueError", message)
