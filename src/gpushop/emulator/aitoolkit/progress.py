"""tqdm's progress line, as ai-toolkit's ToolkitProgressBar prints it, one line per update:
`NAME:  12%|#2        | 250/2000 [00:30<03:30,  8.33it/s, lr: 1.0e-04 loss: 4.123e-01]`."""

from __future__ import annotations

ASCII = " 123456789#"  # tqdm's ascii bar characters
WIDTH = 10


def interval(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def bar(fraction: float) -> str:
    nsyms = len(ASCII) - 1
    full, part = divmod(int(fraction * WIDTH * nsyms), nsyms)
    if full >= WIDTH:
        return ASCII[-1] * WIDTH
    return ASCII[-1] * full + ASCII[part] + ASCII[0] * (WIDTH - full - 1)


def line(desc: str, n: int, total: int, elapsed: float, done: int, postfix: str = "") -> str:
    """`done` steps took `elapsed` (simulated) seconds in this run: the rate and ETA."""
    fraction = n / total if total else 1.0
    head = f"{desc}: {fraction * 100:3.0f}%|{bar(fraction)}| {n}/{total}"
    if done <= 0 or elapsed <= 0:
        return f"{head} [{interval(elapsed)}<?, ?it/s{', ' + postfix if postfix else ''}]"
    rate = done / elapsed
    speed = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
    remaining = interval((total - n) / rate)
    tail = f", {postfix}" if postfix else ""
    return f"{head} [{interval(elapsed)}<{remaining}, {speed}{tail}]"
