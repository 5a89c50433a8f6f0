"""One logging layer, several sinks: console, ``metrics.jsonl``, TensorBoard.

The library reports through a :class:`Monitor`; which sinks are on is the caller's choice
(the command-line tools switch the console on, tests usually leave it off). TensorBoard files are
written to the run folder itself, so ``tensorboard --logdir runs`` shows every run.

* ``scalars(step, {...})`` — TensorBoard scalars (loss terms, λ, lr, throughput...).
* ``epoch(epoch, {...})`` — one JSON line per epoch in ``metrics.jsonl`` + a console line.
* ``progress(iterable, total, desc)`` — a progress bar on the terminal (tqdm), or the iterable.
* ``histogram``, ``image``, ``hparams`` — for search and tuning.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Iterable, Optional


class Monitor:
    def __init__(self, run_dir: Optional[str], *, console: bool = False, tensorboard: bool = True,
                 jsonl: bool = True, enabled: bool = True, epoch_hook=None):
        self.run_dir = run_dir
        self.epoch_hook = epoch_hook  # called with (epoch, values) after each epoch (tuning)
        self.console = console and enabled
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        # Sinks open on the first write, not here: a run refused by a check after the monitor was
        # made (bad budget, missing data, a folder holding a finished run) leaves no file behind.
        self._want_tb = enabled and bool(run_dir) and tensorboard
        self._want_jsonl = enabled and bool(run_dir) and jsonl
        self._opened = not (self._want_tb or self._want_jsonl)

    @property
    def tensorboard(self) -> bool:
        """Whether this monitor writes TensorBoard files (once it writes anything)."""
        return self._want_tb

    def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        os.makedirs(self.run_dir, exist_ok=True)
        if self._want_tb:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: keep it lazy
            self._tb = SummaryWriter(log_dir=self.run_dir)
        if self._want_jsonl:
            self._jsonl = open(os.path.join(self.run_dir, "metrics.jsonl"), "a")

    # --- sinks -----------------------------------------------------------------------------
    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        self._open()
        if self._tb is None:
            return
        for k, v in values.items():
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(prefix + k, v, step)

    def epoch(self, epoch: int, values: dict, step: Optional[int] = None) -> None:
        row = {"epoch": epoch, "time": round(time.time(), 3), **values}
        self._open()
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if step is not None:
            self.scalars(step, {k: v for k, v in values.items() if "/" in k})
        if self.console:
            shown = "  ".join(f"{k}={_fmt(v)}" for k, v in values.items()
                              if isinstance(v, (int, float)) and not k.startswith("time"))
            self.write(f"epoch {epoch}: {shown}")
        if self.epoch_hook is not None:
            self.flush()
            self.epoch_hook(epoch, values)

    def histogram(self, tag: str, values, step: int) -> None:
        self._open()
        if self._tb is not None:
            self._tb.add_histogram(tag, values, step)

    def image(self, tag: str, chw, step: int) -> None:
        self._open()
        if self._tb is not None:
            self._tb.add_image(tag, chw, step, dataformats="CHW")

    def hparams(self, hparams: dict, metrics: dict) -> None:
        self._open()
        if self._tb is not None:
            clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
            self._tb.add_hparams(clean, metrics, run_name=".")

    def write(self, line: str) -> None:
        """A line on the console (between progress bars), when the console sink is on."""
        if not self.console:
            return
        from tqdm import tqdm  # a dependency: its write keeps the progress bars intact

        tqdm.write(line, file=sys.stderr)

    def info(self, line: str) -> None:
        """A line about the run on stdout, beside its results (when the console sink is on): what
        it is run on, not its progress, which goes to stderr with the epochs."""
        if not self.console:
            return
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)

    def progress(self, iterable: Iterable, total: int, desc: str) -> Iterable:
        if not self.console:
            return iterable
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                    file=sys.stderr, mininterval=1.0)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
