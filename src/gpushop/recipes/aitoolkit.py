"""Reading what ai-toolkit leaves behind: its progress bar in the log, its checkpoint files.

The training bar is a tqdm bar whose description is the job name (``config.name``)::

    my_lora:  12%|#2        | 250/2000 [00:30<03:30,  8.33it/s, lr: 1.0e-04 loss: 4.123e-01]

Bars are redrawn with ``\\r``, so one log "line" may hold hundreds of them; ANSI colour codes may
be mixed in. Other bars share the format ("Caching latents to disk: ...", "Loading checkpoint
shards: ...", "Generating Images: ..."), so give the job name when you know it; without it only
bars that report an ``lr`` or a ``loss`` count. The step counts are absolute: a resumed run's bar
starts at the step it resumed from.

Checkpoints are ``<name>_<step, 9 digits>.safetensors`` (the intermediate saves, pruned to
``max_step_saves_to_keep``) and ``<name>.safetensors`` (the final LoRA, written when done).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BAR = re.compile(
    r"(?P<desc>[^\r\n|]*?):\s*(?P<pct>\d{1,3})%\|[^|\r\n]*\|\s*(?P<step>\d+)/(?P<total>\d+)"
    r"\s*\[(?P<elapsed>[\d:]+)(?:<(?P<remaining>[\d:?]+))?(?:,\s*(?P<rate>[^,\]]*))?"
    r"(?:,\s*(?P<postfix>[^\]]*))?\]"
)
_LR = re.compile(r"\blr:\s*(?P<v>[-+0-9.eE]+)")
_LOSS = re.compile(r"\bloss:\s*(?P<v>[-+0-9.eE]+|nan|inf)")


@dataclass(frozen=True, slots=True)
class Progress:
    """One redraw of a progress bar."""

    name: str
    step: int
    total: int
    elapsed_s: float | None
    remaining_s: float | None
    rate: str  # as tqdm printed it: "8.33it/s", "1.52s/it"
    lr: float | None = None
    loss: float | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    @property
    def seconds_per_step(self) -> float | None:
        """From tqdm's rate: "1.52s/it" is 1.52, "8.33it/s" is 0.12 (None when unknown)."""
        m = re.fullmatch(r"\s*([0-9.]+)\s*(s/[a-z]+|[a-z]+/s)\s*", self.rate)
        if not m:
            return None
        value = float(m.group(1))
        if m.group(2).startswith("s/"):
            return value
        return 1.0 / value if value > 0 else None


def _clock(text: str | None) -> float | None:
    """tqdm's "01:02:03" / "03:30" as seconds; None for "?" or nothing."""
    if not text or "?" in text:
        return None
    seconds = 0.0
    for part in text.split(":"):
        if not part.isdigit():
            return None
        seconds = seconds * 60 + int(part)
    return seconds


def _float(pattern: re.Pattern[str], text: str) -> float | None:
    m = pattern.search(text)
    if not m:
        return None
    try:
        return float(m.group("v"))
    except ValueError:
        return None


def parse_progress(text: str, name: str | None = None) -> list[Progress]:
    """Every training-bar redraw in ``text`` (a log, or a chunk of it), in order."""
    out: list[Progress] = []
    for piece in re.split(r"[\r\n]+", _ANSI.sub("", text)):
        for m in _BAR.finditer(piece):
            desc = m.group("desc").strip()
            postfix = m.group("postfix") or ""
            if name is not None:
                # a timestamp or logger prefix may come before the bar on the same line
                if desc != name and desc.rsplit(None, 1)[-1:] != [name]:
                    continue
                desc = name
            elif "lr:" not in postfix and "loss:" not in postfix:
                continue
            out.append(
                Progress(
                    name=desc,
                    step=int(m.group("step")),
                    total=int(m.group("total")),
                    elapsed_s=_clock(m.group("elapsed")),
                    remaining_s=_clock(m.group("remaining")),
                    rate=(m.group("rate") or "").strip(),
                    lr=_float(_LR, postfix),
                    loss=_float(_LOSS, postfix),
                )
            )
    return out


def last_progress(text: str, name: str | None = None) -> Progress | None:
    bars = parse_progress(text, name)
    return bars[-1] if bars else None


def last_step(text: str, name: str | None = None) -> int | None:
    """The last training step the log reports (None when training has not started)."""
    bar = last_progress(text, name)
    return bar.step if bar else None


def _checkpoint_pattern(name: str | None) -> re.Pattern[str]:
    stem = re.escape(name) if name is not None else r".+"
    return re.compile(rf"(?P<name>{stem})_(?P<step>\d{{9}})\.safetensors")


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def newest_checkpoint(names: Iterable[str], name: str | None = None) -> tuple[str, int] | None:
    """The intermediate save with the highest step as (file name, step), or None.

    ``names`` may be bare file names or paths. With ``name`` only that job's files count.

    >>> newest_checkpoint(["a_000000250.safetensors", "a_000001000.safetensors", "a.yaml"], "a")
    ('a_000001000.safetensors', 1000)
    """
    pattern = _checkpoint_pattern(name)
    best: tuple[str, int] | None = None
    for item in names:
        base = _basename(item)
        m = pattern.fullmatch(base)
        if m and (best is None or int(m.group("step")) > best[1]):
            best = (base, int(m.group("step")))
    return best


def final_lora_name(name: str) -> str:
    return f"{name}.safetensors"


def is_finished(names: Iterable[str], name: str) -> bool:
    """Whether the final LoRA ``<name>.safetensors`` is among ``names``."""
    final = final_lora_name(name)
    return any(_basename(n) == final for n in names)


def steps_lost(
    log_text_or_last_step: str | int | None,
    checkpoint_names: Iterable[str],
    name: str | None = None,
) -> int:
    """Training steps a restart would redo: the last step reached (a log, or the step itself)
    minus the newest checkpoint's step. 0 when the final LoRA exists or nothing ran yet."""
    names = list(checkpoint_names)
    if name is not None and is_finished(names, name):
        return 0
    if isinstance(log_text_or_last_step, str):
        reached = last_step(log_text_or_last_step, name)
    else:
        reached = log_text_or_last_step
    if reached is None:
        return 0
    newest = newest_checkpoint(names, name)
    saved = newest[1] if newest else 0
    return max(0, reached - saved)
