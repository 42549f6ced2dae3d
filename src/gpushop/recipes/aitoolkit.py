"""Reading what ai-toolkit leaves behind: its progress bar in the log, its checkpoint files.

The training bar is a tqdm bar whose description is the job name (``config.name``)::

    my_lora:  12%|#2        | 250/2000 [00:30<03:30,  8.33it/s, lr: 1.0e-04 loss: 4.123e-01]

Bars are redrawn with ``\\r``, so one log "line" may hold hundreds of them; ANSI colour codes may
be mixed in. Other bars share the format ("Caching latents to disk: ...", "Loading checkpoint
shards: ...", "Generating Images: ..."), so give the job name when you know it; without it only
bars that report an ``lr`` or a ``loss`` count. The step counts are absolute: a resumed run's bar
starts at the step it resumed from.

Checkpoints are ``<name>_<step, 9 digits>.safetensors`` (the intermediate saves, pruned to
``max_step_saves_to_keep``) and ``<name>.safetensors`` (the final LoRA, written when done);
``optimizer.pt`` beside them is the optimizer state of the last save. Each save's step is in its
header's ``training_info`` metadata.

Resuming: ai-toolkit loads the newest ``<name>*.safetensors`` by ``os.path.getctime`` and prints
``Found step N in metadata, starting from there``. A file's ctime is when it was last written on
the instance and cannot be set, so after uploads that finish in any order (parallel SFTP) the
"newest" can be any of them: `choose_resume` therefore picks the one checkpoint to send back
(with the optimizer state), and `resumed_step` reads where the trainer really started.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gpushop.recipes.safetensors import SafetensorsError, read_header

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


OPTIMIZER = "optimizer.pt"
_FOUND = re.compile(r"Found step (?P<step>\d+) in metadata, starting from there")


def checkpoints_newest_first(names: Iterable[str], name: str) -> list[tuple[str, int | None]]:
    """The saves a resume may start from, best first: the final LoRA (its step is only in its
    header: None here), then the intermediate saves by step, highest first. Paths in
    sub-folders (samples) do not count: the trainer looks in its save folder only.

    >>> checkpoints_newest_first(["a_000000450.safetensors", "optimizer.pt",
    ...     "a_000000600.safetensors", "samples/a_000000900.safetensors"], "a")
    [('a_000000600.safetensors', 600), ('a_000000450.safetensors', 450)]
    """
    pattern = _checkpoint_pattern(name)
    final = final_lora_name(name)
    found: list[tuple[str, int | None]] = []
    has_final = False
    for item in names:
        if "/" in item.replace("\\", "/"):
            continue
        if item == final:
            has_final = True
        elif (m := pattern.fullmatch(item)) is not None:
            found.append((item, int(m.group("step"))))
    found.sort(key=lambda pair: pair[1] or 0, reverse=True)
    return [(final, None), *found] if has_final else found


def saved_step(path: Path) -> int | None:
    """The step recorded in a save's ``training_info`` metadata (what the trainer reads on
    resume); None when the header has none. SafetensorsError for a truncated or corrupt file."""
    info = read_header(path)
    raw = info.metadata.get("training_info")
    try:
        step = json.loads(raw)["step"] if raw else None
    except (ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


@dataclass(frozen=True)
class ResumeChoice:
    """What goes back to a new instance so that the trainer resumes where the job got to.

    ``files`` are relative to the synced save folder, in the order to upload them: the optimizer
    state first, the checkpoint last (a later write never makes another file the newest).
    """

    files: list[str]
    step: int  # the step the trainer will find in the checkpoint (0: it starts over)
    checkpoint: str | None  # None: no usable checkpoint was synced
    reached: int | None = None  # the last step the lost run reported
    skipped: list[str] = field(default_factory=list)  # newer saves that are unusable, and why

    @property
    def steps_lost(self) -> int:
        return max(0, (self.reached or 0) - self.step)

    def describe(self) -> str:
        """e.g. "reached step 637; newest synced checkpoint: step 600 (a_000000600.safetensors)"."""
        if self.checkpoint is None:
            where = "none synced: a resume starts over from step 0"
        else:
            where = f"step {self.step} ({self.checkpoint})"
        skipped = "".join(f"; passed over {why}" for why in self.skipped)
        return f"reached step {self.reached or 0}; newest synced checkpoint: {where}{skipped}"


def choose_resume(folder: Path, name: str, log_text: str = "") -> ResumeChoice:
    """The newest valid save in ``folder`` (the synced copy of the trainer's save folder) and
    the optimizer state: nothing else, so the trainer has no other file to pick. A save that is
    truncated or corrupt (synced while it was being written) is passed over for the next one."""
    reached = last_step(log_text, name) if log_text else None
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError:
        names = []
    skipped: list[str] = []
    for candidate, named_step in checkpoints_newest_first(names, name):
        try:
            step = saved_step(folder / candidate)
        except SafetensorsError as exc:
            skipped.append(f"{candidate}: {exc.args[0].split(': ', 1)[-1]}")
            continue
        if step is None:
            step = named_step
        if step is None:
            skipped.append(f"{candidate}: no step in its metadata")
            continue
        files = [OPTIMIZER] if OPTIMIZER in names else []
        return ResumeChoice([*files, candidate], step, candidate, reached, skipped)
    return ResumeChoice([], 0, None, reached, skipped)


def resumed_step(text: str, name: str | None = None) -> int | None:
    """Where a (resumed) run of the trainer really started, from its log: the step of its
    ``Found step N in metadata`` line, else the step its training bar starts at once it shows
    (0: it started over); None while the log tells neither yet.

    >>> resumed_step("Loading from /o/a_000000450.safetensors\\nFound step 450 in metadata, "
    ...              "starting from there\\n")
    450
    """
    found = _FOUND.search(text)
    if found:
        return int(found.group("step"))
    bars = parse_progress(text, name)
    return bars[0].step if bars else None


# The lines of ai-toolkit's log worth a person's attention while it trains (the rest, its config
# dump, module counts and buckets, is in the job's log): the model download and load, the
# dataset as found, latents, every save, a resume's starting point.
_MILESTONE = re.compile(
    r"^(?:Downloading \S|Fetching \d+ files: 100%|Loading \w+ model|\s*-\s*Found \d+ images"
    r"|Caching latents for|Saved checkpoint to|Loading from \S|Found step \d+ in metadata)"
)


def is_milestone(line: str) -> bool:
    """Whether a (whole) line of ai-toolkit's log is worth showing while it runs.

    >>> [is_milestone(s) for s in ("Loading Flux model", "Loading vae", "  -  Found 6 images")]
    [True, False, True]
    """
    return bool(_MILESTONE.match(line))
