"""One logging layer, several sinks: console, ``metrics.jsonl``, TensorBoard.

The library reports through a :class:`Monitor`; which sinks are on is the caller's choice
(the command-line tools switch the console on, tests usually leave it off). TensorBoard files are
written to the run folder itself, so ``tensorboard --logdir runs`` shows every run.

* ``scalars(step, {...})`` — TensorBoard scalars (loss terms, λ, lr, throughput...).
* ``epoch_scalars(step, {...}, means)`` — an epoch's values in TensorBoard, at the epoch's last step.
* ``epoch(epoch, {...}, step)`` — one JSON line per epoch in ``metrics.jsonl`` + a console line.
* ``progress(iterable, total, desc)`` — a progress bar on the terminal (tqdm), or the iterable.
* ``histogram``, ``image``, ``hparams`` — for search and tuning.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Iterable, Optional

from dan.errors import UserError


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
        self._purge_step: Optional[int] = None
        self._at: tuple = (None, set())  # (step, the TensorBoard tags written at it)
        self.time_left: Optional[float] = None  # seconds, for the next epoch's console line (dan.loop)

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
            # a resumed run hides the events a killed one wrote after its checkpoint (resume_at)
            self._tb = SummaryWriter(log_dir=self.run_dir, purge_step=self._purge_step)
        if self._want_jsonl:  # appended to in place: a link there (a given folder's) had its target appended to
            from dan.checkpoint import open_no_link

            path = os.path.join(self.run_dir, "metrics.jsonl")
            self._jsonl = os.fdopen(open_no_link(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")

    def resume_at(self, step: int) -> None:
        """The run resumes from its checkpoint of global step ``step``: TensorBoard hides the events
        of later steps that the interrupted run wrote (``SummaryWriter(purge_step=step + 1)``), which
        the resumed run writes again; without it every such step held two values per tag."""
        self._purge_step = step + 1 if step > 0 else None
        if self._tb is not None:  # already writing (a monitor handed to a second run): a new file purges
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(log_dir=self.run_dir, purge_step=self._purge_step)

    # --- sinks -----------------------------------------------------------------------------
    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        self._open()
        if self._tb is None:
            return
        if self._at[0] != step:
            self._at = (step, set())
        for k, v in values.items():
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(prefix + k, v, step)
                self._at[1].add(prefix + k)

    def epoch_scalars(self, step: int, values: dict, means=()) -> None:
        """An epoch's values (the keys with a ``/``) in TensorBoard at the epoch's last step
        ``step``, but for ``means`` (epoch means of per-step scalars, which TensorBoard holds per
        logging step: the mean under the same tag gave it two values at this step) and the tags
        already written at this step (the last logging window's, which the epoch's end repeats)."""
        written = self._at[1] if self._at[0] == step else set()
        self.scalars(step, {k: v for k, v in values.items() if "/" in k and k not in means and k not in written})

    @staticmethod
    def row(epoch: int, values: dict, step: Optional[int] = None) -> dict:
        """The ``metrics.jsonl`` row of an epoch: its number, the time, the global step at its end
        (TensorBoard's step of its values) and ``values``."""
        return {"epoch": epoch, "time": round(time.time(), 3), **({"step": step} if step is not None else {}),
                **values}

    def epoch(self, epoch: int, values: dict, step: Optional[int] = None, row: Optional[dict] = None) -> None:
        """``row`` (default :meth:`row` of the arguments) in ``metrics.jsonl``, a console line and the
        epoch hook. TensorBoard gets the values from :meth:`epoch_scalars`, which the training loop
        calls before the checkpoint. The console line ends with :attr:`time_left`, the seconds the
        run's other epochs are expected to take, which the loop sets before the call (an audit's 90
        epochs at 224 px showed each epoch's bar and no overall time; an attribute, not an argument,
        so that a caller's subclass overriding this signature keeps working: a review)."""
        left = getattr(self, "time_left", None)
        row = row or self.row(epoch, values, step)
        self._open()
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self.console:
            shown = "  ".join(f"{k}={_fmt(v)}" for k, v in values.items()
                              if isinstance(v, (int, float)) and not k.startswith("time"))
            self.write(f"epoch {epoch}: {shown}" + (f"  ({duration(left)} left)" if left else ""))
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


@contextlib.contextmanager
def owned_monitor(monitor: Optional[Monitor], run_dir: Optional[str], **kwargs):
    """``monitor``, or when it is None a ``Monitor(run_dir, **kwargs)`` that is closed when the
    block ends, however it ends. A monitor the caller passed stays open: it is the caller's to close
    (the tools' :func:`dan.cli.common.run_monitored`). An audit's ``dan.search(...)`` left, per call,
    a TensorBoard writer thread running and ``metrics.jsonl`` open (a ResourceWarning when
    collected): only the tools closed the monitor, and the API made its own."""
    if monitor is not None:
        check_same_folder(monitor, run_dir)
        yield monitor
        return
    own = Monitor(run_dir, **kwargs)
    try:
        yield own
    finally:
        own.close()


def check_same_folder(monitor: Monitor, run_dir: Optional[str]) -> None:
    """A monitor that writes files writes them to its own folder: one handed to a run in another folder
    would put that run's metrics.jsonl and TensorBoard events beside another run's (an audit's notebook
    passed one monitor to two ``dan.search`` calls with two ``out=``: the second run's folder got its
    checkpoints and arch.json, the first one's its metrics). Refused before the run starts."""
    if not (monitor.enabled and monitor.run_dir and run_dir):
        return  # a console-only or switched-off monitor writes no file
    if os.path.realpath(monitor.run_dir) != os.path.realpath(run_dir):
        raise UserError(f"the monitor writes to {monitor.run_dir} and this run's folder is {run_dir}: pass "
                        f"Monitor({run_dir!r}), or no monitor (the run makes its own)")


def duration(seconds: float) -> str:
    """``seconds`` as a reader takes a time left: "40 s", "12 min", "3 h 05 min"."""
    if seconds < 60:
        return f"{max(seconds, 0):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
