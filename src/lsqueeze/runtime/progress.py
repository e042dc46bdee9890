"""Signs of life in a job's log: one flushed line every few seconds when no progress bar is drawn.

Snakemake and SLURM send a job's output to a file, where a tqdm bar is off (`--no-progress`) or a
wall of carriage returns; without these lines a 20k-step job's log stays empty for its whole run.
"""

from __future__ import annotations

import sys
import time

DEFAULT_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Ticker:
    """Prints `<label>: <unit> i/total (..%), <rate>, <extra>, ETA ..` at most every `every` s.

    `every <= 0` prints on every call (tests, short jobs); `every=None` prints nothing.
    """

    def __init__(self, label: str, total: int, done: int = 0, every: float | None = DEFAULT_EVERY_S,
                 unit: str = "step", stream=None):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.start_done = done
        self.t0 = self.last = time.perf_counter()

    def due(self) -> bool:
        """Cheap enough to ask on every step; the caller builds its extras only when it is due."""
        return self.every is not None and time.perf_counter() - self.last >= self.every

    def log(self, done: int, items_per_unit: int = 1, items: str = "images", **extra) -> None:
        now = time.perf_counter()
        self.last = now
        elapsed = max(now - self.t0, 1e-9)
        rate = (done - self.start_done) / elapsed
        parts = [f"{self.label}: {self.unit} {done}/{self.total} "
                 f"({100 * done / max(self.total, 1):.0f}%)",
                 f"{rate * items_per_unit:.0f} {items}/s"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()]
        left = (self.total - done) / rate if rate > 0 else float("inf")
        parts.append(f"ETA {_duration(left)}" if left != float("inf") else "ETA ?")
        print(", ".join(parts), file=self.stream, flush=True)

    def tick(self, done: int, items_per_unit: int = 1, **extra) -> None:
        if self.due() or (done == self.total and self.every is not None):
            self.log(done, items_per_unit, **extra)
