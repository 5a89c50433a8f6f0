"""Atomic checkpoints that load without executing pickled code, and RNG state capture.

A checkpoint is a dict of tensors and plain Python values (model, optimizer and scheduler state
dicts, step/epoch, architecture logits, temperature, RNG states, the resolved config). It is
written to a temporary file in the same folder and renamed over the old one, so a run killed while
saving never leaves a half-written ``last.pt``; it is read with ``torch.load(weights_only=True)``,
so a checkpoint file cannot run code.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import warnings
import random
from typing import Callable

import numpy as np
import torch

from dan.errors import UserError, out_of_memory, spelt


def load_sliced(model: torch.nn.Module, path: str, expect: dict | None = None) -> int:
    """Start ``model`` from the model weights of the checkpoint at ``path``, each tensor cut to the
    model's shape by its leading entries (a supernet's full-width weights give any narrower
    network of the same structure its leading channels, as the small path slices them). Returns
    the number of tensors copied; a missing or wider-than-stored tensor is a :class:`UserError`,
    and so is a checkpoint of another network or task than ``expect`` says (``space``,
    ``num_classes``, ``in_channels``): a 1000-class, 3-channel search's supernet started a
    10-class grey network, cut to its first classes and channel, without a word."""
    path = init_path(path)
    full = load_checkpoint(path)
    check_same_task(full, expect or {}, path)
    state = full["model"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise UserError(f"{path} does not hold this network's weights (missing {missing[0]} and "
                        f"{len(missing) - 1} more): start from a checkpoint of the same model")
    with torch.no_grad():
        for key, target in own.items():
            src = state[key]
            if src.ndim != target.ndim or any(t > s for t, s in zip(target.shape, src.shape)):
                raise UserError(f"{path}: {key} has shape {tuple(src.shape)}, this network needs "
                                f"{tuple(target.shape)}: start from a checkpoint of the same model")
            target.copy_(src[tuple(slice(0, n) for n in target.shape)])
    return len(own)


# A run started from another run's weights (``train.init_from``) says which, in its folder:
# {"path": ..., "sha256": ...} of the checkpoint as it was read.
INIT_FROM = "init_from.json"


def check_same_task(state: dict, expect: dict, path: str) -> None:
    """Refuse a checkpoint whose recorded model space, class count or input channels differ from
    ``expect`` (what it does not record is not checked)."""
    cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    info = state.get("data_info") if isinstance(state.get("data_info"), dict) else {}
    had = {"space": (cfg.get("model") or {}).get("space"), "num_classes": info.get("num_classes"),
           "in_channels": info.get("in_channels"), "class_names": info.get("class_names")}
    for key, want in expect.items():
        if had.get(key) is None or want is None or had[key] == want:
            continue
        if key == "class_names":  # the same count, other names or order: its labels mean other classes
            diff = next(f"label {i} was {a!r}, now {b!r}" for i, (a, b) in enumerate(zip(had[key], want)) if a != b) \
                if len(had[key]) == len(want) else f"{len(had[key])} classes, now {len(want)}"
            raise UserError(f"{path} was trained on other classes ({diff}): use the data it was trained on, "
                            f"or start a new run")
        raise UserError(f"{path} is a checkpoint of {key} {had[key]!r}, this network has {want!r}: start from a "
                        f"checkpoint of the same network and data (train.init_from)")


def init_path(path: str) -> str:
    """The checkpoint ``train.init_from`` names: the file, or a run folder's ``checkpoints/last.pt``
    (a folder was "does not exist: start without --resume or pass the right --out", which is about
    another setting)."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "checkpoints", "last.pt")):
        return os.path.join(path, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise UserError(f"train.init_from {path} is no checkpoint: give a run folder or its checkpoints/last.pt")
    return path


def start_from(model: torch.nn.Module, path: str, run_dir: str | None = None, expect: dict | None = None) -> int:
    """Weight inheritance (``train.init_from``): :func:`load_sliced`, and in ``run_dir`` (when
    given) :data:`INIT_FROM`, naming the checkpoint by content, so a run can be told apart from
    one started from another checkpoint written to the same path (the search suite's ledger pairs
    a retrain with its search's supernet by it)."""
    path = init_path(path)
    copied = load_sliced(model, path, expect)
    if run_dir is not None:
        save_json({"path": os.path.abspath(path), "sha256": file_digest(path)}, os.path.join(run_dir, INIT_FROM))
    return copied


def file_digest(path: str) -> str:
    """The SHA-256 of a file's bytes (hex): which checkpoint a run started from, kept beside it."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(obj, path: str, indent: int | None = 2) -> None:
    """``obj`` as JSON (a trailing newline); pair it with :func:`atomic_write`."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def atomic_write(write: Callable[[str], None], path: str, suffix: str = "") -> None:
    """Call ``write(tmp_path)`` then rename the result to ``path``. The rename replaces a symbolic
    link at ``path`` instead of writing through it (a run folder a user was given may hold one), and a
    link already at the temporary path is removed first."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}{suffix}")
    if os.path.islink(tmp):
        os.remove(tmp)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(obj, path: str, indent: int | None = 2) -> None:
    """:func:`write_json` through :func:`atomic_write`."""
    atomic_write(lambda p: write_json(obj, p, indent), path)


def save_bytes(data: bytes, path: str) -> None:
    """``data`` into ``path`` through :func:`atomic_write`."""
    def write(p: str) -> None:
        with open(p, "wb") as f:
            f.write(data)

    atomic_write(write, path)


LINK_FIX = ("DAN does not write or delete through links in its folders: remove the link and try again (to put a "
            "run on another disk, link or name the run folder itself: --out /other/disk/run)")


def open_no_link(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags)`` that does not follow a symbolic link at ``path`` (``O_NOFOLLOW``): a
    link there is a :class:`UserError`. For the files written in place in a run folder (its
    ``.lock``, the append-only ``metrics.jsonl``): a link in a folder a user was given had its target
    overwritten or appended to."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise UserError(f"{path} is a symbolic link: {LINK_FIX}") from None
        raise


def check_no_links(path: str, root: str) -> None:
    """Refuse ``path`` (a folder or file DAN writes or deletes) when it, or a folder between ``root``
    (the folder the user named) and it, is a symbolic link, or when it lies outside ``root`` once
    both are resolved. ``root`` itself may be a link: the user chose it. An audit's study deleted
    ``~/elsewhere/search`` through a link ``<out>/trials/trial-0000 -> ~/elsewhere``."""
    top = os.path.abspath(root)
    rel = os.path.relpath(os.path.abspath(path), top)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise UserError(f"{path} is not inside {root}, the folder DAN may write: give another folder")
    at = top
    for part in [] if rel == os.curdir else rel.split(os.sep):
        at = os.path.join(at, part)
        if os.path.islink(at):
            raise UserError(f"{at} is a symbolic link: {LINK_FIX}")
    real, real_top = os.path.realpath(path), os.path.realpath(top)
    if os.path.commonpath([real, real_top]) != real_top:
        raise UserError(f"{path} resolves to {real}, outside {root}: {LINK_FIX}")


def save_checkpoint(state: dict, path: str) -> None:
    atomic_write(lambda p: write_through_python(lambda f: torch.save(state, f), p), path)


def write_through_python(save: Callable, path: str) -> None:
    """``save(file)`` into ``path`` through a Python file object, so that a full disk is the
    ``OSError`` (ENOSPC) the tools report in one line: given a path, ``torch.save`` raised
    "RuntimeError: unexpected pos" (an audit's full disk, exit 1 with a traceback). Its writes go
    through here and the first OSError is raised in place of what PyTorch made of it; so is a
    KeyboardInterrupt that struck during a write (PyTorch would make it a RuntimeError too)."""
    failed: list = []
    with open(path, "wb") as f:
        class Writer:
            def write(self, b):
                try:
                    return f.write(b)
                except BaseException as e:  # a full disk, and Ctrl-C (or an alarm) while writing
                    failed.append(e)
                    raise

            def flush(self):
                f.flush()

        try:
            save(Writer())
        except RuntimeError:
            if failed:
                raise failed[0] from None
            raise


def write_bytes(save: Callable, path: str) -> None:
    """``save(buffer)`` into memory, then the bytes into ``path``: for TorchScript's and
    torch.export's writers, which on a full disk abort the process from C++ ("terminate called
    after throwing an instance of 'c10::Error'", exit 134) whether given a path or a file object.
    The deployed network is held twice in memory for the moment."""
    import io

    buf = io.BytesIO()
    save(buf)
    with open(path, "wb") as f:
        f.write(buf.getbuffer())


RESUME_FIX = "delete it to start over, or restore a good copy"
READ_VERSION = 1  # the newest checkpoint format (``"version"``) this code reads: dan.engine's and dan.search's


def load_checkpoint(path: str, map_location="cpu", fix: str = RESUME_FIX) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; a missing or corrupt file is a
    :class:`UserError` ending in ``fix`` (a run's: delete it to start over; a tool that only
    reads the file names what it reads instead)."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist: start without {spelt('--resume', 'resume=True')} or "
                        f"pass the right {spelt('--out', 'out=')}")
    try:
        with warnings.catch_warnings():  # a TorchScript file's "dispatching to torch.jit.load" line
            warnings.simplefilter("ignore", UserWarning)  # came before the one error line below
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        if out_of_memory(e):  # a good checkpoint too large for the memory left: never "delete it"
            raise
        if is_torchscript(path):
            raise UserError(f"{path} is a deployed TorchScript network, not a run's checkpoint: {fix}") from e
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"checkpoint {path} is corrupt or not a DAN checkpoint ({first}): {fix}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} is not a DAN checkpoint (no model state): {fix}")
    version = state.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > READ_VERSION:
        # written but never read: a newer DAN's checkpoint was taken as this one's
        raise UserError(f"checkpoint {path} has format version {version!r}, newer than this DAN reads "
                        f"({READ_VERSION}): update DAN (pip install -U dan) to read it")
    return state


def is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding compiled code), read as a zip only."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_named(path: str, what: str, fix: str, map_location="cpu") -> tuple[str, dict]:
    """A checkpoint a user names for a tool to read (a kd teacher, a baseline's supernet): the file,
    or a run folder's ``checkpoints/last.pt``; missing or unreadable, a :class:`UserError` ending in
    ``fix`` (never "delete it": the file is the user's). Returns its path and its state."""
    ckpt = os.path.join(path, "checkpoints", "last.pt") if os.path.isdir(path) else path
    if not os.path.isfile(ckpt):
        raise UserError(f"{what} {path}: no checkpoint at {ckpt}: {fix}")
    return ckpt, load_checkpoint(ckpt, map_location, fix)


class LockHeld(Exception):
    """:func:`file_lock` without waiting found the lock held; ``pid``: the holder's, as it wrote it."""

    def __init__(self, pid: str):
        super().__init__(pid)
        self.pid = pid


@contextlib.contextmanager
def file_lock(path: str, wait: bool = True):
    """An exclusive ``flock`` on ``path`` (created) for the block, dropped by the kernel however the
    process ends; the holder's pid is written in it. ``wait=False`` raises :class:`LockHeld`
    instead of waiting. Without ``fcntl`` (not POSIX) or on a file system without locks the block
    runs unlocked. (One mechanism for the suite runner's folder, its ledger and the tuning
    storage's schema, each written with its own ``flock`` code before; a run folder's lock,
    :func:`dan.loop.lock_run_dir`, outlives a block and is its own.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = open_no_link(path, os.O_CREAT | os.O_RDWR)  # its target was truncated to a pid
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(os.read(fd, 32).decode(errors="replace").strip()) from None
        except OSError:  # a file system without locks
            pass
        else:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


_CODE: list = []  # code_version(), once per process


def code_version() -> str:
    """This DAN: its package version, and the git commit of its source when it runs from a
    checkout (``0.1.0+g1a2b3c4d5e6f``). The version alone stayed 0.1.0 through hundreds of
    commits that changed a run's numbers, so nothing could tell a resume across them. A checkout
    whose code (``dan/``, ``search_spaces/``, ``tools/``, ``configs/``) differs from its commit adds
    ``.dirty`` and a digest of the difference (``0.1.0+g1a2b3c4d5e6f.dirty9f8e7d6c``): a resume after
    an uncommitted edit was taken for the same code."""
    if not _CODE:
        from importlib import metadata

        try:
            version = metadata.version("dan")
        except metadata.PackageNotFoundError:
            version = "unknown"
        here = os.path.dirname(os.path.abspath(__file__))
        lines = _git(here, "rev-parse", "--show-toplevel", "--short=12", "HEAD").split()
        # DAN's own checkout only: installed into a venv inside a user's repository, that one's commit
        own = len(lines) == 2 and os.path.isdir(os.path.join(lines[0], "dan")) and os.path.samefile(
            os.path.join(lines[0], "dan"), here)
        code = f"{version}+g{lines[1]}" if own else version
        if own:
            code += _dirty(lines[0])
        _CODE.append(code)
    return _CODE[0]


def _dirty(top: str) -> str:
    """``.dirty<digest>`` when the checkout's code differs from its commit, else ``""``: a digest of
    the names and bytes of the files that differ or git does not track yet (not of ``git diff``'s
    text, which a user's git settings change, nor of a new file's name alone, which missed its edits)."""
    paths = ["--", "dan", "search_spaces", "tools", "configs"]
    names = sorted((set(_git(top, "diff", "--name-only", "HEAD", *paths).split("\n")) |
                    set(_git(top, "ls-files", "--others", "--exclude-standard", *paths).split("\n"))) - {""})
    if not names:
        return ""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        try:
            with open(os.path.join(top, name), "rb") as f:
                digest.update(f.read())
        except OSError:  # deleted
            digest.update(b"\1")
    return ".dirty" + digest.hexdigest()[:8]


def _git(where: str, *args: str) -> str:
    """What ``git -C where args`` prints; empty when git is missing, fails or is slow."""
    import subprocess

    try:
        done = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def rng_state() -> dict:
    """The state of every random generator a run uses, as plain tensors and Python values, and
    the number of CPU threads and the code (:func:`code_version`), on which a CPU run's numbers
    depend as well (``"threads"``: a resume with another ``--threads`` continued with other numbers
    without a word; ``"code"``: an upgrade audit's resume across versions gave another arch.json;
    see :func:`dan.loop.read_run_checkpoint`)."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "threads": torch.get_num_threads(),
        "code": code_version(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
