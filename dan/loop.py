"""The loop that training and search share: run folders, start-or-resume, the optimizer step and
the epochs.

A *task* (:class:`dan.engine.Trainer`, :class:`dan.search.Searcher`) owns its models and says what
one step and one epoch's end are; :func:`run_epochs` does the rest the same way for both:

* every epoch re-seeds all generators from ``(seed, seed_tag, epoch)`` and sets the data order of
  that epoch, so a resumed run replays exactly what an uninterrupted one runs;
* steps are counted, their scalars averaged for the epoch's row (each over the steps that
  returned it) and written to TensorBoard every ``log_every`` steps with the throughput of that
  window;
* at the end of an epoch the task evaluates and returns the rest of the row; its TensorBoard
  values and the task's figures (``after_epoch``) are written and flushed, then the checkpoint,
  which holds the row, then the row in ``metrics.jsonl``: a run killed between checkpoint and row
  neither loses the row (a resume writes it) nor repeats it (rows of epochs after the checkpoint
  are dropped on resume: :func:`reconcile_metrics`), and a resumed run's TensorBoard hides what
  was written after the checkpoint's step (:meth:`dan.monitor.Monitor.resume_at`).

The task interface (duck-typed): ``cfg``, ``monitor``, ``data``, ``run_dir``, ``model`` (its
weights are checked for finiteness before a checkpoint is kept), ``steps_per_epoch``,
``epoch``, ``step``; ``begin_epoch(epoch)``, ``train_step(x, y) -> dict``,
``log_window(logs, images_per_s, bar)``, ``end_epoch() -> dict``, ``save(row)``,
``after_epoch()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time

import torch

from dan import distributed
from dan.checkpoint import atomic_write, check_no_links, check_same_task, code_version, load_checkpoint, open_no_link
from dan.config import BEFORE_KEY, FORMER_DEFAULTS, Config, flatten, load_yaml_file
from dan.errors import DivergedError, UserError, spelt
from dan.saved import read_former, saved_by_run, used_by
from dan.seed import derive, kept_rng_state, seed_everything
from dan.yaml_data import MAX_YAML_BYTES, load_yaml_text

# Keys a resumed run may change: how long, where, and how fast it runs; not what it computes.
RESUMABLE_CHANGES = ("train.epochs", "device", "data.workers", "out", "train.latency_batches", "train.amp",
                     "train.compile",
                     # read at a fresh start only (a resumed run's weights are its checkpoint's): a
                     # retrain's supernet is named by its path, which moves with the search folder
                     "train.init_from",
                     # the search's last step only (dan/refine.py, dan/shortlist.py): the trained supernet is the same
                     "search.refine_rounds", "search.refine_batches", "search.refine_recal_batches",
                     "search.shortlist", "search.shortlist_steps")
# Files of a run's results: a new run never writes into a folder holding any of them (a finished
# run whose checkpoints were deleted must not be overwritten or mixed with a new one).
FINISHED_FILES = ("summary.json", "small.pt", "small.pt2", "model.pt", "model.pt2", "metrics.jsonl", "arch.json")


# ------------------------------------------------------------------------------- run folders
def check_same_config(saved: dict, current: dict, path: str, tool: str | None = None) -> None:
    """A resumed run must compute the same thing: only :data:`RESUMABLE_CHANGES` may differ. A key
    the saved config lacks (added to the config after the checkpoint was written) counts as what the
    code before it did (:data:`dan.config.BEFORE_KEY`), else as its default, so that a newer version
    resumes an older version's run (:func:`adopt_run_settings` gives the run those values). A saved
    value an older DAN ran and this one refuses counts as that DAN ran it (:func:`dan.saved.read_former`:
    ``search.warmup_epochs: 0.5`` as 1), and a key a run of ``tool`` does not read
    (:func:`dan.saved.used_by`: ``search.*`` in a training run) is not compared; ``code`` (the DAN
    that wrote the config) never is."""
    flat_saved, flat_now = flatten(read_former(saved)[0]), flatten(current)
    defaults = {**flatten(Config().to_dict()), **BEFORE_KEY}
    method = flat_now.get("train.method")
    for key in sorted(set(flat_saved) | set(flat_now)):
        if key in RESUMABLE_CHANGES or key == "code" or key.startswith("tune.") or \
                not (tool is None or used_by(key, tool, method)):
            continue
        if key in ("adjoint.arch", "model.arch") and _moved(flat_saved.get(key), flat_now.get(key)):
            continue
        if not same_value(flat_saved.get(key, defaults.get(key)), flat_now.get(key)):
            raise UserError(f"{path} was written with {key}={flat_saved.get(key, defaults.get(key))!r}, not "
                            f"{flat_now.get(key)!r}: resume with the same config and flags, or pick "
                            f"another {spelt('--out', 'out=')}")


def same_value(saved, now) -> bool:
    """Whether a saved setting and today's are the same: equal, or the same number written two ways.
    A budget typed ``--budget-flops 1.8e6`` was kept as the text '1.8e6' (YAML 1.1 reads no float
    without a dot and a signed exponent) and is read as 1800000.0 today: a review's resume of such
    a run was refused ("written with search.budget_flops='1.8e6', not 1800000.0")."""
    if isinstance(saved, bool) or isinstance(now, bool):  # (True == 1 in Python)
        return type(saved) is type(now) and saved == now
    if saved == now:
        return True
    try:
        return float(saved) == float(now)
    except (TypeError, ValueError):
        return False


def adopt_run_settings(cfg: Config) -> list[str]:
    """Before a resume of a run another DAN wrote (its checkpoint records another ``code``, or
    none: :func:`dan.checkpoint.code_version`): the keys of ``cfg`` its ``config.yaml`` says
    otherwise where this command left them at today's default: a key it lacks takes what the code
    before that key did (:data:`~dan.config.BEFORE_KEY`), and a saved value that was a former
    default (:data:`~dan.config.FORMER_DEFAULTS`) is kept. Returns ``key=value`` of each key
    changed in ``cfg`` (the run's note); the rest is :func:`check_same_config`'s. A run this DAN
    wrote is left alone, and so is a key the command typed (``cfg.typed``: a tool's flags and
    ``--set``), today's default included: taking the run's own value overrode what the user typed.
    From the API, which records nothing typed, a key at today's default counts as left."""
    run_dir = cfg.run_dir
    try:
        saved = flatten(load_yaml_file(os.path.join(run_dir, "config.yaml"), "config"))
        st = load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt"))
        rng = st.get("rng")
    except (UserError, OSError, AttributeError):  # nothing readable: the checkpoint's own check decides
        return []
    if isinstance(rng, dict) and rng.get("code") == code_version():
        return []
    defaults, now = flatten(Config().to_dict()), flatten(cfg.to_dict())
    typed = getattr(cfg, "typed", frozenset())  # the tools' flags and --set (dan.cli.common.resolve_config)
    # only the keys this kind of run reads: an old train run's resume listed search.arch_lr=0.01, ...
    tool = _tool(st.get("kind"), st.get("config", {}))
    adopted = []
    for key in sorted(set(BEFORE_KEY) | set(FORMER_DEFAULTS)):
        if key in typed or now.get(key) != defaults.get(key) or not used_by(key, tool, now.get("train.method")):
            continue  # set by this command (compared, not changed), or not read by this run
        value = BEFORE_KEY.get(key) if key not in saved else saved[key]
        if key not in saved and key not in BEFORE_KEY or value == now.get(key):
            continue
        if key in saved and value not in FORMER_DEFAULTS.get(key, ()):
            continue  # the run was made with another value on purpose: check_same_config says so
        cfg.set(key, value)
        adopted.append(f"{key}={value!r}")
    return adopted + _adopt_holdout_batch(cfg, saved, now, typed, tool)


def _adopt_holdout_batch(cfg: Config, saved: dict, now: dict, typed, tool: str) -> list[str]:
    """A search an older DAN wrote ran its held-out batches at ``search.arch_batch_size``, whatever
    ``data.holdout_batch_size`` the user gave (it saved the two equal); today a given one is kept
    (:func:`dan.config._arch_batch_size`). On a resume of such a run by the same command, the run's
    own size is taken, unless the command typed ``search.arch_batch_size`` (a review's resume of an
    old run with ``data.holdout_batch_size=8`` was refused: "written with ... 16, not 8")."""
    held, arch = saved.get("data.holdout_batch_size"), saved.get("search.arch_batch_size")
    if tool != "search.py" or held is None or held != arch or "search.arch_batch_size" in typed or \
            now.get("data.holdout_batch_size") == held:
        return []
    cfg.set("data.holdout_batch_size", held)
    cfg.set("search.arch_batch_size", arch)
    return [f"data.holdout_batch_size={held!r}", f"search.arch_batch_size={arch!r}"]


def _moved(saved, now) -> bool:
    """The arch.json a retrain was started on, named now by another path: the search folder was
    moved or renamed (the old path is gone) or the file copied (the same bytes). An audit's
    retrain could not be resumed after ``mv runs/s runs/moved``, by any flag."""
    if not (isinstance(saved, str) and isinstance(now, str)) or not os.path.isfile(now):
        return False
    if not os.path.exists(saved):
        return True
    try:
        with open(saved, "rb") as a, open(now, "rb") as b:
            return a.read() == b.read()
    except OSError:
        return False


def finished_files(run_dir: str) -> list:
    if not os.path.isdir(run_dir):
        return []
    names = set(os.listdir(run_dir))
    return [n for n in FINISHED_FILES if n in names] + sorted(n for n in names if n.startswith("events.out.tfevents."))


def check_run_dir(cfg: Config, resume: bool) -> None:
    """Refuse to start a new run over finished work, or to resume nothing; writes nothing."""
    run_dir = cfg.run_dir
    if not distributed.info().main:
        return
    check_not_a_file(run_dir)
    check_creatable(run_dir)
    study = next((n for n in ("study.db", "tune.json") if os.path.isfile(os.path.join(run_dir, n))), None)
    if study:  # a run written into it stopped the study from continuing (tune refuses run folders)
        raise UserError(f"{run_dir} holds a tuning study ({study}): choose another {spelt('--out', 'out=')} (its "
                        f"trials' runs are in trials/, and tune.py continues the study there)")
    check_run_lock(run_dir)
    if os.path.islink(os.path.join(run_dir, "checkpoints")):  # its checkpoints (and stale files' removal) went there
        check_no_links(os.path.join(run_dir, "checkpoints"), run_dir)
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if resume and not os.path.isfile(last):
        raise UserError(f"nothing to resume in {run_dir} (no checkpoints/last.pt): drop "
                        f"{spelt('--resume', 'resume=True')} to start a new run")
    what = held_run(run_dir)
    written = os.path.join(run_dir, "config.yaml")
    source = getattr(cfg, "source", None)  # the config file the command read (Config.from_file)
    if not resume and not what and source and os.path.isfile(written) and os.path.samefile(source, written):
        # an audit's `train.py --config exp/config.yaml --out exp` wrote the resolved config over the
        # user's own four lines (comments and layout lost)
        raise UserError(f"the config file {source} is where this run writes its config.yaml: move it out of "
                        f"{run_dir}, or choose another {spelt('--out', 'out=')}")
    if not resume and what:
        raise UserError(f"{run_dir} already holds a run ({what}): pass {spelt('--resume', 'resume=True')} to "
                        f"continue it, or choose another {spelt('--out', 'out=')} (nothing was overwritten)")


# run folders this process holds: their lock files' descriptors (:func:`lock_run_dir`)
_HELD: dict = {}


def _close_held_in_child() -> None:
    """In a forked child (a data loader's worker): close the inherited lock descriptors. An
    ``flock`` belongs to the open file description every fork shares, so the lock lived as long as
    any child did: an audit's DataLoader worker outlived its SIGKILLed search by minutes, and
    ``--resume`` was refused as "in use by another run" (the run's process long dead)."""
    for fd in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _lock_path(run_dir: str) -> str:
    return os.path.join(run_dir, ".lock")


def lock_run_dir(run_dir: str) -> None:
    """Hold ``run_dir`` for this process: an exclusive ``flock`` on its ``.lock`` until
    :func:`release_run_dir` or the process's end (the kernel drops it even after SIGKILL). An audit
    started a second run into a folder whose first had not finished an epoch: both exited 0, their
    metrics rows interleaved, and the first printed a top-1 whose small.pt was the second's. A
    ``.lock`` that is a symbolic link is refused (:func:`dan.checkpoint.open_no_link`): an audit's
    given folder linked it to a file of the user's, which the pid overwrote."""
    key = os.path.abspath(run_dir)
    if key in _HELD:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the held-run checks still apply)
        return
    path = _lock_path(run_dir)
    for attempt in range(3):
        fd = open_no_link(path, os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # a holder that released and removed the file between our open and lock: ours is a
            # dead inode; open the new file and try again
            if _same_file(fd, path):
                break
            os.close(fd)
        except BlockingIOError:
            os.close(fd)
            raise UserError(_in_use(run_dir)) from None
        except FileNotFoundError:
            os.close(fd)
        except OSError:  # a file system without locks: the held-run checks still apply
            os.close(fd)
            return
    else:
        raise UserError(_in_use(run_dir))
    try:
        os.ftruncate(fd, 0)
        # for the refusal's line only: the process, and the machine it runs on (a folder on a shared
        # disk can be held from another host, where this one cannot tell whether it still runs)
        os.write(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode())
    except OSError:
        pass
    _HELD[key] = fd


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` itself (not what a link there points to) is the file open as ``fd``."""
    try:
        st, now = os.fstat(fd), os.lstat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def release_run_dir(run_dir: str) -> None:
    """Give up the lock of :func:`lock_run_dir` (the run has ended) and remove its file: only the
    file it locked (never a link or another file put in its place)."""
    fd = _HELD.pop(os.path.abspath(run_dir), None)
    if fd is None:
        return
    try:
        if _same_file(fd, _lock_path(run_dir)):
            os.remove(_lock_path(run_dir))
    except OSError:
        pass
    os.close(fd)


def check_run_lock(run_dir: str) -> None:
    """Refuse a folder another process's run holds (:func:`lock_run_dir`), before any work; and one
    whose ``.lock`` is a symbolic link (the run would refuse it once under way)."""
    path = _lock_path(run_dir)
    if os.path.abspath(run_dir) in _HELD or not (os.path.islink(path) or os.path.isfile(path)):
        return
    try:
        import fcntl
    except ImportError:
        return
    try:
        fd = open_no_link(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(_in_use(run_dir)) from None
    except OSError:
        pass
    finally:
        os.close(fd)


def _in_use(run_dir: str) -> str:
    try:
        with open(_lock_path(run_dir), encoding="utf-8") as f:
            pid, host = (f.read().split() + ["", ""])[:2]
    except (OSError, UnicodeDecodeError):
        pid, host = "", ""
    here = host in ("", socket.gethostname())  # (an older DAN wrote the process only)
    if pid.isdigit() and here and not _alive(int(pid)):  # its run ended; a process it started holds the lock
        return (f"{run_dir} is held by a process that its run (process {pid}, ended) left running: end it "
                f"(`fuser -v {_lock_path(run_dir)}` names it), then run the same command again")
    where = f"process {pid}" + ("" if here else f" on {host}")
    return (f"{run_dir} is in use by another run" + (f" ({where})" if pid.isdigit() else "")
            + f": wait for it to end, or choose another {spelt('--out', 'out=')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def check_not_a_file(run_dir: str) -> None:
    """The run folder a tool is given (``--out``) may be missing or a folder, not a file."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"{spelt('--out', 'out=')} {run_dir} is a file: pass a folder")


def check_creatable(run_dir: str) -> None:
    """The run folder ``run_dir`` exists or can be made: its nearest existing parent is a folder this
    process may write into. Checked with the others, before any work: an audit's ``dan.search(...,
    out="/proc/nope")`` loaded the data and built the network, then raised a bare FileNotFoundError.
    What this cannot see (a file system that refuses the folder anyway) :func:`prepare_run_dir` says."""
    if os.path.isdir(run_dir):
        return
    parent = os.path.dirname(os.path.abspath(run_dir))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"cannot create the run folder {run_dir}: {parent} is a file, not a folder: choose another "
                        f"{spelt('--out', 'out=')}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the run folder {run_dir} in {parent} (Permission denied): choose another "
                        f"{spelt('--out', 'out=')} in a folder you can write")


def held_run(run_dir: str) -> str | None:
    """The first file that says ``run_dir`` holds a run a new one must not overwrite (its last
    checkpoint, else a finished file: :data:`FINISHED_FILES`, event files), or None.

    A run that stopped before its first epoch ended (a corrupt image in its first batches, an
    interrupt) leaves an empty ``metrics.jsonl`` and no checkpoint: it finished nothing, and
    ``--resume`` has nothing to resume, so it does not hold the folder (else the user could neither
    resume nor start again there). Its event files are not written over (a new run's have new
    names) and stay beside the new run's."""
    if os.path.isfile(os.path.join(run_dir, "checkpoints", "last.pt")):
        return os.path.join("checkpoints", "last.pt")
    found = finished_files(run_dir)
    if _no_epoch_finished(run_dir):
        found = [n for n in found if n != "metrics.jsonl" and not n.startswith("events.out.tfevents.")]
    return next(iter(found), None)


# entries only a DAN run folder or tuning study holds (besides FINISHED_FILES and event files); a
# study under another storage (--storage journal:..., a database) holds only trials/ until it ends
RUN_MARKERS = (".lock", "checkpoints", "study.db", "tune.json", "trials")


def foreign_entry(run_dir: str) -> str | None:
    """An entry of ``run_dir`` when it is an existing, non-empty folder that holds no DAN run nor
    tuning study (none of :data:`RUN_MARKERS`, a finished file, event files, or a ``config.yaml`` a
    run saved: :func:`dan.saved.saved_by_run`), else None."""
    try:
        names = sorted(os.listdir(run_dir))
    except OSError:  # absent (created by the run), or no folder (check_run_dir says so)
        return None
    if any(n in names for n in RUN_MARKERS):
        return None
    names = [n for n in names if not n.startswith(".")]  # a file manager's .DS_Store is no one's work
    if not names or finished_files(run_dir):
        return None
    if "config.yaml" in names:
        try:
            if saved_by_run(load_yaml_file(os.path.join(run_dir, "config.yaml"), "config")):
                return None  # a run stopped before its first epoch: a new one may start there
        except (UserError, OSError):
            pass
    return names[0]


def check_out_from_file(out, source: str) -> None:
    """Refuse the run folder ``out`` that the config file ``source`` named (the user did not type it:
    no ``--out``) when it is a folder of other files (:func:`foreign_entry`): an audit's config with
    ``out: /some/existing/folder`` wrote its config.yaml and small.json over that folder's and removed its
    ``.*.tmp*`` files (:func:`remove_stale_temporaries`). A new folder, an empty one and a run's own are
    taken, wherever the file puts them (a config file is trusted like a script)."""
    entry = foreign_entry(out) if isinstance(out, str) and out else None
    if entry is not None:
        raise UserError(f"{source} sets out: {out}, an existing folder that holds no DAN run (it holds {entry}): "
                        f"a run would write over its files; name it with {spelt('--out', 'out=')} if you mean it, "
                        f"or choose a new folder")


def _no_epoch_finished(run_dir: str) -> bool:
    """``run_dir``'s ``metrics.jsonl`` exists and is empty (the monitor opens it at the first logged
    step and writes a row only when an epoch ends)."""
    try:
        return os.path.getsize(os.path.join(run_dir, "metrics.jsonl")) == 0
    except OSError:
        return False


def prepare_run_dir(cfg: Config, resume: bool) -> str:
    """Create the run folder and write the resolved config (after :func:`check_run_dir`)."""
    run_dir = cfg.run_dir
    if not distributed.info().main:  # rank 0 checks and writes; the others wait for it
        distributed.barrier()
        return run_dir
    check_run_dir(cfg, resume)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:  # (the tools said it in a line of their own; from Python it was a bare OSError)
        raise UserError(f"cannot create the run folder {run_dir} ({e.strerror}): choose another "
                        f"{spelt('--out', 'out=')} in a folder you can write") from None
    lock_run_dir(run_dir)  # after every check: a refused run leaves no folder
    remove_stale_temporaries(run_dir)
    cfg.code = code_version()  # config.yaml says which DAN wrote it (dan.saved.older_config_notes)
    if resume:
        keep_earlier_config(cfg, run_dir)
    atomic_write(cfg.save, os.path.join(run_dir, "config.yaml"))
    distributed.barrier()
    return run_dir


def keep_earlier_config(cfg: Config, run_dir: str) -> None:
    """Before a resume that changes the config (``--resume --epochs 4``, the changes a resume
    allows), its ``config.yaml`` is kept as ``config.before-resume-<n>.yaml``: it was overwritten,
    and a run extended from 2 to 3 epochs (its first two on a 2-epoch schedule) read as if made
    from the 3-epoch config, which, run again, scored 50 % where the folder had 41 %. It is read as
    a config is (:mod:`dan.yaml_data`: size and nesting limits); one this DAN cannot read as such
    (too large or deep, not UTF-8, not YAML) is kept as it is: an audit's deeply nested config.yaml
    was a RecursionError of ``yaml.safe_load``."""
    path = os.path.join(run_dir, "config.yaml")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError:
        return
    try:
        was = load_yaml_text(raw.decode("utf-8"), f"config {path}") if len(raw) <= MAX_YAML_BYTES else None
    except (UnicodeDecodeError, UserError):
        was = None
    now = cfg.to_dict()
    if isinstance(was, dict):  # which DAN wrote it is no change of the run's (a review: every resume of an
        was.pop("code", None)  # older run kept a copy that differed in `code` alone)
        now.pop("code", None)
    if was != now:  # the file's bytes copied (not read whole: it may be larger than a config)
        atomic_write(lambda p: shutil.copyfile(path, p), numbered_path(run_dir, "config.before-resume-{}.yaml"))


def numbered_path(run_dir: str, pattern: str) -> str:
    """The first free ``pattern.format(n)`` (n = 1, 2, ...) in ``run_dir``."""
    n = 1
    while os.path.exists(os.path.join(run_dir, pattern.format(n))):
        n += 1
    return os.path.join(run_dir, pattern.format(n))


def keep_numbered(run_dir: str, pattern: str, text: str) -> str:
    """Write ``text`` to the first free ``pattern.format(n)`` (n = 1, 2, ...) in ``run_dir``; its path."""
    path = numbered_path(run_dir, pattern)
    atomic_write(lambda p: open(p, "w", encoding="utf-8").write(text), path)
    return path


def remove_stale_temporaries(run_dir: str) -> None:
    """Delete the temporary files a run killed while writing left behind (``.<name>.tmp<pid>``:
    :func:`dan.checkpoint.atomic_write` removes its own unless the process was SIGKILLed)."""
    for folder in (run_dir, os.path.join(run_dir, "checkpoints")):
        if not os.path.isdir(folder) or (folder != run_dir and os.path.islink(folder)):
            continue
        for name in os.listdir(folder):
            if name.startswith(".") and ".tmp" in name:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass


def checked_start(cfg: Config, resume: bool, build, least=None):
    """Every check a run makes before its first file is written (folder, then ``build()``'s own
    checks of config and data, then memory, then the checkpoint's compatibility), writing nothing:
    :func:`start` runs it first, and a dry run (:mod:`dan.dry_run`) alone. ``build()`` returns the
    task; returns it restored when ``resume``. ``least(task)``: a context in which the task's model
    takes its least memory (see :func:`check_memory`)."""
    cfg.validate()
    check_run_dir(cfg, resume)
    adopted = adopt_run_settings(cfg) if resume else []
    task = build()
    if adopted:  # on stdout (silent with --quiet), as the thread-count note
        task.monitor.info(f"note: resumed with the run's own settings where this DAN's defaults differ from the "
                          f"one that wrote it: {', '.join(adopted)} (to change one, start it anew in another "
                          f"{spelt('--out', 'out=')})")
    with least(task) if least is not None else contextlib.nullcontext():
        check_memory(task)
    if resume:
        task.restore()
    return task


def start(cfg: Config, resume: bool, build, least=None):
    """Start or resume a run: :func:`checked_start`, then the run folder made and held, and, on a
    resume, ``metrics.jsonl`` made to agree with the checkpoint (:func:`reconcile_metrics`: the
    first write of a resume, done here and no longer in the tasks' ``restore``, so that the checks
    write nothing and the write comes after the folder's lock)."""
    task = checked_start(cfg, resume, build, least)
    if resume:
        task.monitor.resume_at(task.step)
    prepare_run_dir(cfg, resume)
    if resume and task.dist.main:
        reconcile_metrics(cfg.run_dir, task.epoch, task.last_row, task.step)
    return task


# runs in progress in this process (a search's shortlist fine-tunes run inside it)
_DEPTH = [0]


def start_and_fit(cfg: Config, resume: bool, build, least=None):
    """:func:`start` the task, run its ``fit()`` and return what it returns; the run folder's
    lock (:func:`lock_run_dir`) is given up when the run ends, however it ends. Ctrl-C becomes
    the line of the outermost run only (a shortlist's fine-tune spoke for the search around it).
    The outermost run gives the caller's process its random generators back when it ends
    (:func:`dan.seed.kept_rng_state`); a run inside it (a shortlist's fine-tune) leaves them to it."""
    keep = kept_rng_state() if _DEPTH[0] == 0 else contextlib.nullcontext()
    with keep, _own_run(cfg.run_dir):
        try:
            return start(cfg, resume, build, least).fit()
        except KeyboardInterrupt as e:
            if e.args or _DEPTH[0] > 1:
                raise
            raise interrupted(cfg.run_dir) from None


@contextlib.contextmanager
def _own_run(run_dir: str):
    """A run of this process in ``run_dir``: refused when another run of this process holds it
    (it was let through, and a refused second call released the first's lock); the lock is
    released after only when this run took it."""
    if os.path.abspath(run_dir) in _HELD and distributed.info().main:
        raise UserError(_in_use(run_dir))
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        release_run_dir(run_dir)


def interrupted(run_dir: str) -> KeyboardInterrupt:
    """Ctrl-C's line for a run (:func:`dan.cli.common.run_tool` prints it): where its finished
    epochs are, or that none finished (the generic line sent users to a ``--resume`` that then
    said "nothing to resume")."""
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if os.path.isfile(last):
        return KeyboardInterrupt(f"interrupted: finished epochs are in {last}; continue with "
                                 f"{spelt('--resume', 'resume=True')}")
    teacher = os.path.join(run_dir, "teacher", "checkpoints", "last.pt")  # a kd run's own teacher
    if os.path.isfile(teacher):
        return KeyboardInterrupt(f"interrupted while the teacher trained: its finished epochs are in {teacher}; "
                                 f"run the same {spelt('command', 'call')} again (without "
                                 f"{spelt('--resume', 'resume=True')}) to continue it")
    return KeyboardInterrupt(f"interrupted before the first epoch ended: nothing to resume; run the same "
                             f"{spelt('command', 'call')} again (without {spelt('--resume', 'resume=True')})")


def check_memory(task) -> None:
    """Refuse a task whose training step cannot fit in this machine's memory (:mod:`dan.memory`),
    before its folder is written or a checkpoint's optimizer state is loaded. The estimate is of
    ``task.model``'s forward as it stands: a task whose steps vary it (a search's sampled widths)
    sets it to its least first (``start``'s ``least``), so that the check stays a lower bound."""
    from dan.memory import check_training
    from dan.models import input_shape

    t, data = task.cfg.train, task.data
    train = data.train
    shape = (max(1, min(train.batch_size, train.num_samples)),) + tuple(input_shape(data.info)[1:])
    evals = [min(d.batch_size, d.num_samples) for d in (data.test, data.holdout_eval) if d is not None]
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if task.dist.enabled else 1
    check_training(task.model, shape, eval_batch=max(evals, default=1), optimizer=t.optimizer,
                   momentum=t.momentum, amp=task.amp, processes=ranks)


def start_managed(cfg: Config, build, root: str):
    """:func:`start` for a folder this package manages (a tuning trial, a teacher) inside ``root``,
    the folder the user named: resume from its checkpoint when there is one; otherwise whatever an
    attempt killed before its first checkpoint left (events, a config) is removed and the run starts
    afresh. A folder that is, or lies under, a symbolic link below ``root`` is refused
    (:func:`dan.checkpoint.check_no_links`): an audit's study removed and wrote ``~/elsewhere/search``
    through a link ``<out>/trials/trial-0000 -> ~/elsewhere``."""
    check_no_links(cfg.run_dir, root)
    resume = os.path.isfile(os.path.join(cfg.run_dir, "checkpoints", "last.pt"))
    if not resume and os.path.isdir(cfg.run_dir) and distributed.info().main:
        check_run_lock(cfg.run_dir)  # another worker's attempt at it, alive: not ours to remove
        shutil.rmtree(cfg.run_dir)
    return start(cfg, resume, build)


def managed_fit(cfg: Config, build, root: str):
    """:func:`start_managed` the task (in ``root``) and run its ``fit()``, the folder's lock given up after."""
    with _own_run(cfg.run_dir):
        return start_managed(cfg, build, root).fit()


def reconcile_metrics(run_dir: str, epoch: int, row: dict | None, step: int | None = None) -> None:
    """After a resume from the checkpoint of ``epoch`` (global step ``step``): ``metrics.jsonl``
    holds exactly one row per epoch up to ``epoch`` (rows of later epochs, written before a kill,
    are dropped; the row of ``epoch``, if the kill came between checkpoint and row, is written from
    the checkpoint, with every key a row has: a checkpoint written before its row held the time and
    step gets its file's time, a few seconds later than the row's would be, and ``step``)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if row is not None and "time" not in row:
        when = os.path.getmtime(os.path.join(run_dir, "checkpoints", "last.pt"))
        row = {"epoch": row.get("epoch", epoch), "time": round(when, 3),
               **({"step": step} if step is not None else {}), **row}
    rows = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut by the kill
                if isinstance(r, dict) and isinstance(r.get("epoch"), int) and r["epoch"] <= epoch:
                    rows.append(r)
    seen, unique = set(), []
    for r in rows:
        if r["epoch"] not in seen:
            seen.add(r["epoch"])
            unique.append(r)
    if row is not None and epoch not in seen and epoch > 0:
        unique.append(row)
    text = "".join(json.dumps(r) + "\n" for r in unique)

    def write(p: str) -> None:  # closed here: the file left to the collector was a ResourceWarning at every resume
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(write, path)


# ------------------------------------------------------------------------------------- steps
def read_run_checkpoint(path: str, cfg: Config, device, kind: str | None = None, data=None, say=None) -> dict:
    """The checkpoint a run resumes from: of ``kind`` (when given), written with a config that
    computes the same thing as ``cfg`` (:func:`check_same_config`), on the same ``data`` (the run's
    :class:`~dan.data.Data`, when given): the same class names where both name them (a class folder
    renamed between epochs swapped the labels of the rest), and :func:`check_same_data`."""
    st = load_checkpoint(path, map_location=device)
    check_same_task(st, {"class_names": data.class_names if data is not None else None}, path)
    wrote, now = _tool(st.get("kind"), st.get("config", {})), _tool(kind, cfg.to_dict())
    if wrote != now:  # was a config key's difference ("written with adjoint.arch=None, not ...")
        raise UserError(f"{path} is a {wrote} run's checkpoint, and this is {now}: resume it with {wrote}, "
                        f"or choose another {spelt('--out', 'out=')}")
    check_same_config(st.get("config", {}), cfg.to_dict(), path, now)
    check_same_data(st, data, path)  # after the config: a changed data setting is named as such
    rng = st.get("rng") if isinstance(st.get("rng"), dict) else {}
    code = rng.get("code") if rng else None
    if say is not None and rng and code != code_version():  # (none: a DAN from before runs recorded it)
        wrote = f"DAN {code}" if isinstance(code, str) else "an older DAN (before runs recorded their code)"
        say(f"note: {path} was written by {wrote} and this is {code_version()}: where the code changed, its "
            f"numbers will differ from an uninterrupted run's (resume with that version to keep them)")
    threads = rng.get("threads")
    if say is not None and threads and threads != torch.get_num_threads() and torch.device(device).type == "cpu":
        # a note through the run's monitor (stdout, silent with --quiet): its numbers differ from an
        # uninterrupted run's
        say(f"note: {path} was written with {threads} CPU threads and this run has {torch.get_num_threads()}: "
            f"its numbers will differ from an uninterrupted run's "
            f"({spelt(f'--threads {threads}', f'torch.set_num_threads({threads})')} keeps them)")
    return st


def check_same_data(st: dict, data, path: str) -> None:
    """Refuse to resume the checkpoint ``st`` on other data than it was written on, as far as it
    recorded it (its ``"data_info"``; the class names :func:`dan.checkpoint.check_same_task` compares):
    another class count or input, or another number of images in the training or the test split. An
    audit's ``dan.search(model, (train, test), resume=True)`` with other Dataset objects (another
    length) went on without a word, though the docstring asks for the same objects: the config records
    your Datasets by their class name only."""
    if data is None:
        return
    had = st.get("data_info") if isinstance(st.get("data_info"), dict) else {}
    now = data.record()
    changed = [f"{key} {had[key]}, now {now.get(key)}" for key in ("num_classes", "in_channels", "image_size")
               if had.get(key) is not None and had[key] != now.get(key)]
    sizes, now_sizes = had.get("sizes") or {}, now.get("sizes") or {}
    changed += [f"{n} {split} images, now {now_sizes[split]}" for split, n in sizes.items()
                if now_sizes.get(split) is not None and n != now_sizes[split]]
    if changed:
        raise UserError(f"{path} was written on other data ({'; '.join(changed)}): resume with the data it was "
                        f"written on (from Python, the same Dataset objects), or start a new run in another "
                        f"{spelt('--out', 'out=')}")


def _tool(kind, config) -> str:
    """The tool whose run a checkpoint (its ``kind`` and config) or a starting run is."""
    if kind == "search":
        return "search.py"
    arch = (config.get("adjoint") or {}).get("arch") if isinstance(config, dict) else None
    return "retrain.py" if arch else "train.py"


def load_states(path: str, st: dict, targets: dict) -> None:
    """``targets[key].load_state_dict(st[key])`` for each key; a state that does not fit (another
    network or optimizer) is a user error naming the checkpoint."""
    try:
        for key, obj in targets.items():
            obj.load_state_dict(st[key])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0][:120]}): "
                        f"resume with the config it was written with") from e


def steps_per_epoch(loader, limit_batches: int | None) -> int:
    """Batches an epoch takes from ``loader`` (at most ``limit_batches``); none is a user error."""
    n = len(loader) if limit_batches is None else min(len(loader), limit_batches)
    if n == 0:
        raise UserError(f"the training split has no batch: lower {spelt('--batch-size', 'data.batch_size')} or "
                        f"use more data")
    return n


def optimizer_step(loss: torch.Tensor, optimizer, scheduler, params, grad_clip=None, scaler=None,
                   step: int = 0) -> None:
    """Backward and one optimizer + scheduler step; a non-finite loss ends the run."""
    if not torch.isfinite(loss):
        raise DivergedError(f"training diverged: the loss became {loss.item()} at step {step}; the last "
                            f"checkpoint (if any) holds the last finite weights: lower the lr and start again")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:  # fp16 on CUDA
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    scheduler.step()


# ------------------------------------------------------------------------------------ epochs
def _train_step(task, x, y) -> dict:
    """``task.train_step``; a batch too small for the network's BatchNorm is the user's to fix (a
    batch of 1 through a ResNet's last 1×1 stage was PyTorch's ValueError and its traceback)."""
    try:
        return task.train_step(x, y)
    except ValueError as e:
        if "Expected more than 1 value per channel when training" not in str(e):
            raise
        raise UserError(f"a batch leaves a BatchNorm one value per channel ({str(e).split('got input size ')[-1]}), "
                        f"and it needs 2 or more: raise {spelt('--batch-size', 'data.batch_size')} (a search's "
                        f"held-out batches: data.holdout_batch_size) to 2 or more, or train on more images") from None


def run_epochs(task, *, seed_tag: str, desc: str) -> None:
    """Run ``task`` from ``task.epoch`` to ``cfg.train.epochs`` (see the module docstring)."""
    cfg, t, mon = task.cfg, task.cfg.train, task.monitor
    first, started = task.epoch, time.perf_counter()  # the time left: from this call's epochs alone
    while task.epoch < t.epochs:
        epoch = task.epoch
        seed_everything(derive(cfg.seed, seed_tag, epoch))
        task.data.train.set_epoch(epoch)
        task.begin_epoch(epoch)
        sums, counts = {}, {}
        images, t0 = 0, time.perf_counter()
        bar = mon.progress(task.data.train, task.steps_per_epoch, f"{desc} {epoch + 1}/{t.epochs}")
        for i, (x, y) in enumerate(bar):
            if i >= task.steps_per_epoch:
                break
            logs = _train_step(task, x, y)
            task.step += 1
            images += x.shape[0]
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
            if task.step % t.log_every == 0 or i == task.steps_per_epoch - 1:
                dt = time.perf_counter() - t0
                task.log_window(logs, images / dt if dt > 0 else 0.0, bar)
                images, t0 = 0, time.perf_counter()
        task.epoch += 1
        bad = [n for n, p in task.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never keep non-finite weights in a checkpoint
            raise DivergedError(f"training diverged: {len(bad)} weight tensors (e.g. {bad[0]}) are not finite "
                                f"after epoch {task.epoch}; checkpoints/last.pt still holds the last finite "
                                f"epoch: lower the lr and start again")
        # each over the steps that logged it: a search's architecture steps stop at the landing
        # (search.settle_until: landed), and dividing by every step of the epoch understated them
        row = {k: v / counts[k] for k, v in sums.items()}
        row.update(task.end_epoch())
        # TensorBoard's part of the epoch (its values, the task's figures) is on disk before the
        # checkpoint: a run killed before it redoes the epoch, the events of its steps purged
        # (Monitor.resume_at); one killed after it has them all
        mon.epoch_scalars(task.step, row, means=sums)
        task.after_epoch()
        mon.flush()
        record = mon.row(task.epoch, row, task.step)
        # the CPU threads the epoch ran at (its numbers depend on them): a run resumed with another
        # --threads said so in a note only (silent with --quiet), and summary.json names the last count
        record["threads"] = torch.get_num_threads()
        task.save(record)  # the checkpoint first: a row in metrics.jsonl always has its checkpoint
        per_epoch = (time.perf_counter() - started) / (task.epoch - first)
        mon.time_left = per_epoch * (t.epochs - task.epoch)
        mon.epoch(task.epoch, row, row=record)
