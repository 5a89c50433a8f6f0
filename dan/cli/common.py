"""What the commands share: the common flags, config resolution and error handling.

Functions here take ``argv`` explicitly; only :func:`run_tool` reads ``sys.argv`` (when given no
``argv``). User errors end with exit status 2 and one line on stderr (``error: what — how to fix``),
never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

from dan.config import Config
from dan.errors import UserError, command_line, out_of_memory

# OSErrors a user causes (a path, a permission, a full disk): one line, exit 2; others are bugs.
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                errno.ENOENT, errno.EROFS, errno.ENAMETOOLONG, errno.EEXIST}

FLOPS_NOTE = "FLOPs are multiply-accumulates of conv, linear and matmul layers (K, M, G = powers of 10)."


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit status 2, and the description printed as
    written (the tools' docstrings are laid out by hand: one usage example per line; argparse's
    default reflowed seven tools' examples into one paragraph)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        # argparse takes a value that starts with '-' (and is not a plain negative number) for an
        # option: `--budget-flops -5%` reads "expected one argument", which hides what happened
        m = re.match(r"argument (\S+?)(?:/\S+)?: expected one argument$", message)
        argv = getattr(self, "_argv", [])
        taken = [v for flag, v in zip(argv, argv[1:]) if m and flag == m.group(1) and v.startswith("-")
                 and v not in self._option_string_actions]
        if taken:
            message += f"; argparse reads {taken[0]!r} as an option: write {m.group(1)}={taken[0]}"
        raise UserError(f"{message} (see {self.prog} --help)")


def _int_at_least(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_int = _int_at_least(1, "a positive integer")
nonnegative_int = _int_at_least(0, "an integer >= 0")


def number(lo: float | None = None, hi: float | None = None, *, hi_open: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        if (lo is not None and v < lo) or (hi is not None and (v >= hi if hi_open else v > hi)):
            if hi is None:
                rng = f">= {lo:g}"
            elif lo is None:
                rng = f"{'<' if hi_open else '<='} {hi:g}"
            else:
                rng = f"in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number {rng}, got {text!r}")
        return v

    return parse


def dataset_name(text: str) -> str:
    """``--dataset``: a registered name or a ``package.module:function`` (its form is checked when it is
    built: :func:`dan.data.get_dataset`)."""
    from dan.data.info import list_datasets

    if text in list_datasets() or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}: choose one of {', '.join(list_datasets())}, or "
                                     f"your package.module:function")


def common_parser(prog: str, description: str, out_help: str = "run folder (default runs/<config name>)",
                  name_help: str | None = "run name (default: the config file's name)",
                  dry_run: bool = False) -> Parser:
    """A parser with the flags every tool takes (the README's "Command line" section); a tool whose
    run folder is found otherwise says so in ``out_help``, and one without a run name passes
    ``name_help=None`` (its ``--name`` is then refused: retrain.py ignored it). ``dry_run``: the
    tool takes ``--dry-run`` (:func:`print_plan`)."""
    from dan.data.info import list_datasets

    p = Parser(prog=prog, description=description, epilog=FLOPS_NOTE,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common")
    g.add_argument("--config", help="YAML experiment file (configs/*.yaml)")
    g.add_argument("--dataset", type=dataset_name, metavar="NAME",
                   help=f"{', '.join(list_datasets())}, or your package.module:function returning (train, test) "
                        f"torch Datasets (imported because you name it here)")
    g.add_argument("--data", help="folder holding the dataset files")
    g.add_argument("--download", action="store_true", help="download torchvision datasets when missing")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--limit-batches", type=positive_int,
                   help="at most N batches per epoch and per evaluation (smoke runs)")
    g.add_argument("--image-size", type=positive_int, help="input size (synthetic, image folders, your own dataset)")
    g.add_argument("--num-classes", type=positive_int,
                   help="number of classes: synthetic data, or your own dataset without classes, targets or a ClassLabel")
    g.add_argument("--workers", type=nonnegative_int, help="data-loader processes (image folders, your own dataset)")
    g.add_argument("--out", help=out_help)
    g.add_argument("--name", help=name_help or "not used by this tool (give --out)")
    p.set_defaults(name_unused=name_help is None)
    g.add_argument("--seed", type=int)
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--threads", type=positive_int,
                   help="CPU threads of PyTorch (default: one per core; on a machine busy with other jobs, fewer "
                        "threads than cores avoid a many-fold slow-down; results can differ with the count)")
    g.add_argument("--model", "--space", dest="space",
                   help="base network: a search space name, torchvision.<name>, timm.<name> or your "
                        "package.module:function (imported because you name it here)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model.args.width=32 (repeatable)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars, per-epoch lines or run notes on the console (the files record them; "
                        "the end-of-run result and errors are still printed)")
    g.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard files")
    if dry_run:
        g.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    return p


DRY_RUN_HELP = ("run every check the command makes before its first epoch (config, model, budget, data, run "
                "folder, resume) and print its plan, writing nothing (no run folder, no latency table); exit 0, or 2 "
                "with the run's own error (--download still fetches a missing dataset)")


_COMMON_KEYS = {
    "dataset": "data.dataset", "data": "data.data", "epochs": "train.epochs",
    "batch_size": "data.batch_size", "limit_batches": "train.limit_batches",
    "image_size": "data.image_size", "num_classes": "data.num_classes", "workers": "data.workers",
    "out": "out", "name": "name", "seed": "seed", "device": "device", "space": "model.space",
}


def resolve_config(args: argparse.Namespace, extra_keys: Optional[dict] = None,
                   base: Optional[Config] = None, tool: Optional[str] = None) -> Config:
    """Config file (or ``base``), then flags (a flag left unset keeps the file's value), then
    ``--set``. A file or run another DAN saved is read as that DAN ran it (:mod:`dan.saved`): the
    notes to print are ``cfg.notes`` (:func:`run_monitored`; keys a run of ``tool`` reads, None:
    any), and a value refused today that came from it names it."""
    if getattr(args, "threads", None):  # a machine setting, not the experiment's: not in the config
        import torch

        torch.set_num_threads(args.threads)
    if getattr(args, "name_unused", False) and args.name:  # retrain.py ignored it in silence
        raise UserError("--name does not choose this tool's folder: give --out DIR")
    cfg, notes, by_run = _config_file(args.config, tool) if args.config else (base or Config(), [], False)
    _trust_named(args, cfg if args.config and not by_run else None)
    space = getattr(args, "space", None)
    if space and space != cfg.model.space and cfg.model.args:
        # the file's builder arguments are its model's: the demo config's width=16 reached
        # torchvision's MobileNetV2 ("unexpected keyword argument 'width'"). Left out without a
        # note (a line before a later error's would break its one line); the run's config.yaml
        # and the README say so
        cfg.model.args = {}
    dataset = getattr(args, "dataset", None)
    if dataset and dataset != cfg.data.dataset:
        # likewise the file's dataset's own settings: configs/cifar10_resnet18.yaml with --dataset
        # synthetic (a smoke test) was refused for its data: data/cifar10, which synthetic does not read
        cfg.data.data, cfg.data.download, cfg.data.args, cfg.data.item_keys = None, False, {}, None
    typed_keys = set()
    for attr, key in {**_COMMON_KEYS, **(extra_keys or {})}.items():
        value = getattr(args, attr, None)
        if value is not None:
            cfg.set(key, value)
            typed_keys.add(key)
    if getattr(args, "download", False):
        cfg.data.download = True
    for item in args.set:
        if "=" not in item:
            raise UserError(f"--set takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        cfg.set(key.strip(), value)
        typed_keys.add(key.strip())
    if args.config and "out" not in typed_keys:  # the file's out, not typed: not over a folder of other files
        from dan.loop import check_out_from_file

        check_out_from_file(cfg.out, args.config)
    # the keys this command typed (flags, --set): a resume of another DAN's run compares them and
    # adopts the run's own values only for the others (dan.loop.adopt_run_settings); not saved
    cfg.typed = frozenset(typed_keys)
    saved, saved_from = getattr(cfg, "saved", None), getattr(cfg, "saved_from", None)  # (dan.retrain.retrain_base)
    # the run folder a resume reads; a retrain's is named later (dan.retrain.retrain_config: until then
    # cfg.run_dir is its search's folder, a review found), and its arch.json is what it read
    resumed = cfg.run_dir if getattr(args, "resume", False) and saved_from is None else None
    if resumed:
        from dan import saved as older

        notes += older.resume_former(cfg)
    cfg.notes = notes
    typed = getattr(args, "data", None) is not None or any(i.split("=", 1)[0].strip() == "data.data" for i in args.set)
    if typed and isinstance(cfg.data.data, str) and cfg.data.data:
        # as an absolute path: a relative --data was kept relative in the run's config and arch.json,
        # and a retrain started in another folder looked for the data there
        cfg.data.data = os.path.abspath(os.path.expanduser(cfg.data.data))
    try:
        return cfg.validate()
    except UserError as e:
        from dan import saved as older

        if resumed:  # read only now: a resume's checkpoint is large (a ResNet-50 supernet's), and loaded later
            saved, code = older.run_config(resumed)
            saved_from = (resumed, code)
        if saved_from and older.saved_refusal(saved, e):
            raise older.refusal(e, *saved_from) from None
        raise


def _trust_named(args: argparse.Namespace, own: Optional[Config]) -> None:
    """Trust (:func:`dan.models.trust`) the model and dataset names the user typed: flags, ``--set``, and
    ``own``, the config of their own ``--config`` file. A name that came with a tool's ``base`` (an
    arch.json's stored config) is not, nor one in a config.yaml a run saved (given with ``--config``, it
    may be anyone's): named again, as an arch.json's."""
    from dan import models

    named = [own.model.space, own.data.dataset] if own is not None else []
    named += [getattr(args, "space", None), getattr(args, "dataset", None)]
    named += [item.split("=", 1)[1].strip() for item in args.set
              if "=" in item and item.split("=", 1)[0].strip() in ("model.space", "data.dataset")]
    models.trust(*[n for n in named if n])


def _config_file(path: str, tool: Optional[str]) -> tuple[Config, list, bool]:
    """The ``--config`` file's config, a run's config another DAN saved read as it ran
    (:func:`dan.saved.older_config_notes`), the notes to print, and whether the file is a config.yaml
    a run saved (:func:`dan.saved.saved_by_run`)."""
    from dan import saved as older

    notes, by_run = [], []

    def as_ran(raw: dict) -> dict:
        by_run.append(older.saved_by_run(raw))
        read, said = older.older_config_notes(path, raw, tool)
        notes.extend(said)
        return read

    return Config.from_file(path, read=as_ran), notes, any(by_run)


def retrain_hint(arch_path: str, cfg: Config) -> str:
    """The retrain command to print after a search: your own model's and dataset's names added, since
    an ``arch.json`` alone does not let the retrain import them (:func:`dan.models.trust`)."""
    named = [(flag, name) for flag, name in (("--model", cfg.model.space), ("--dataset", cfg.data.dataset))
             if ":" in name]  # "<object Class>" (searched from Python) has none: no tool rebuilds it
    return " ".join(["python tools/retrain.py", arch_path] + [f"{flag} {name}" for flag, name in named])


def run_tool(main: Callable[[Sequence[str]], int], argv: Optional[Sequence[str]] = None) -> None:
    """Run a tool's ``main`` and exit: 0 on success, 2 with one line for a user error.

    The current folder joins the import path (after the script's own folder), as ``python -m``
    does: a ``--model package.module:factory`` the user names is imported from where they are."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(1, os.getcwd())
    if sys.version_info < (3, 11):  # a traceback's notes (which split and item a dataset raised on)
        sys.excepthook = print_exception_with_notes
    installed = _sigterm_as_interrupt()
    try:
        with command_line():  # messages name the options as flags (--resume), not as keywords (resume=True)
            code = main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        # the reader of the output went away (`reproduce.py --dry-run | head`): stop as a shell's tools
        # do, without the traceback, and without another one when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)  # killed by SIGPIPE, as the shell reports it
    except OSError as e:
        if e.errno not in _USER_ERRNOS:
            raise  # not the user's: a bug keeps its traceback
        # the file being written, not its temporary (.metrics.jsonl.tmp5693: dan.checkpoint.atomic_write)
        where = " " + re.sub(r"(^|/)[.]([^/]+)[.]tmp[0-9]+[^/]*$", r"\1\2", str(e.filename)) if e.filename else ""
        hint = {errno.ENOSPC: "free some disk space (finished epochs are in checkpoints/; --resume continues)",
                errno.EDQUOT: "free some disk space (finished epochs are in checkpoints/; --resume continues)"}.get(
            e.errno, "check the path and its permissions")
        print(f"error: cannot write or read{where}: {e.strerror}: {hint}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        # a command whose work is not a run folder's epochs says its own (:func:`interrupted_line`);
        # under torchrun, Ctrl-C reaches every rank and the line was printed once per rank: rank 0 says it
        if os.environ.get("RANK", "0") == "0":
            print(str(e) if e.args else interrupted_line(sys.modules.get(getattr(main, "__module__", ""))),
                  file=sys.stderr)
        sys.exit(128 + signal.SIGTERM if _TERMINATED[0] else 130)  # as the shell reports each
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise  # not the machine's memory: a bug keeps its traceback
        print(f"error: {one_line(memory_message(e))}", file=sys.stderr)
        sys.exit(2)
    finally:
        if installed:  # the process's own handler again (a tool run inside another, or in a test's process)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _TERMINATED[0] = False
    sys.exit(code or 0)


def print_exception_with_notes(kind, e, tb) -> None:
    """A ``sys.excepthook`` for Python 3.10: the traceback as Python prints it, then the exception's
    notes (:func:`dan.errors.add_note`), as Python 3.11 prints them."""
    sys.__excepthook__(kind, e, tb)
    for note in getattr(e, "__notes__", None) or ():
        print(note, file=sys.stderr)


def _sigterm_as_interrupt() -> bool:
    """SIGTERM (``kill``, ``timeout``, a cluster's preemption or time limit) taken as Ctrl-C: the
    run says what it kept and how to go on, and gives up its folder's lock; it ended the process
    without a word before. Whether this call installed the handler: not when one is set already
    (an outer tool's, as the fuzz tool's runs inside it, or an embedding program's), outside the
    main thread, or under torchrun, whose agent sends SIGTERM to the other ranks when one fails (a
    "continue with --resume" line beside its failure report would mislead)."""
    if threading.current_thread() is not threading.main_thread() or "TORCHELASTIC_RUN_ID" in os.environ or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    return True


_TERMINATED = [False]  # SIGTERM came (exit status 143, not Ctrl-C's 130)


def _stop_on_sigterm(signum, frame):
    _TERMINATED[0] = True
    raise KeyboardInterrupt


INTERRUPTED = ("interrupted: finished epochs are in the run folder's checkpoints/last.pt; "
               "continue with --resume")


def interrupted_line(module) -> str:
    """What Ctrl-C leaves and how to go on, for the command in ``module``: its ``INTERRUPTED``
    line, else the run folder's (train, search, retrain). Tuning said ``--resume`` where the same
    command continues, and the tools that keep no run folder spoke of checkpoints they never write."""
    return getattr(module, "INTERRUPTED", INTERRUPTED)


def memory_message(e: BaseException) -> str:
    """One line for an allocation that failed: how much, and what to lower. (The fuzz audit's
    ``--set data.image_size=1000`` or ``model.args.width=1000`` on its ResNet-18 at batch 16 each
    wanted more than 11 GB.)"""
    m = re.search(r"allocate (\d+) bytes", str(e)) or re.search(r"allocate ([\d.]+ [KMGT]iB)", str(e))
    size = ""
    if m:
        asked = m.group(1) if "iB" in m.group(1) else f"{int(m.group(1)) / 2**20:,.0f} MiB"
        size = f" ({asked} requested)"
    return (f"out of memory{size}: lower the batch size (--batch-size), the image size (--image-size) or "
            "the network's width; a run's finished epochs are in its checkpoints/last.pt (--resume continues)")


# Every character ``str.splitlines`` breaks on, and the other C0/C1 controls (a terminal may act
# on them), shown escaped. Tab stays: it does not break a line.
_ESCAPED = {c: ascii(chr(c))[1:-1] for c in [*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029] if c != 0x09}


def one_line(text: str) -> str:
    """A message as one line: line breaks and control characters a user put in a key or a value are
    shown escaped (``\\n``, ``\\x0b``, ``\\u2028``...), so the message is exactly one line."""
    return text.translate(_ESCAPED)


def open_monitor(cfg: Config, args: argparse.Namespace, **kw):
    """Join torchrun's process group (if any) and open the run's monitor: console, TensorBoard
    and metrics.jsonl on rank 0 only. Returns ``(monitor, dist_info)``."""
    from dan import distributed
    from dan.monitor import Monitor

    dist = distributed.init(cfg.device)  # a no-op unless started by torchrun
    monitor = Monitor(cfg.run_dir, console=not args.quiet and dist.main, tensorboard=not args.no_tensorboard,
                      enabled=dist.main, **kw)
    return monitor, dist


def run_monitored(cfg: Config, args: argparse.Namespace, task):
    """``task(cfg, monitor, resume=args.resume)`` with the run's monitor open (closed however it
    ends); its result on the main rank, None on the others (which print nothing)."""
    monitor, dist = open_monitor(cfg, args)
    for note in getattr(cfg, "notes", ()):  # an older DAN's config or run (resolve_config): stdout, not with --quiet
        monitor.info(note)
    try:
        result = task(cfg, monitor, resume=args.resume)
    finally:
        monitor.close()
    return result if dist.main else None


def print_plan(cfg: Config, args: argparse.Namespace, plan) -> int:
    """``--dry-run``: ``plan(cfg, monitor, resume=args.resume)`` (:mod:`dan.dry_run`) with the run's
    monitor (its notes on stdout, silent with ``--quiet``; it writes nothing unless written to), and
    the plan it returns printed, as a run's result is, with ``--quiet`` too. Returns the exit status."""
    result = run_monitored(cfg, args, plan)
    if result is not None:
        print(result.format())
        print("dry run: nothing was written; run the same command without --dry-run to start it")
    return 0


def print_run_end(cfg: Config, summary) -> None:
    """The last lines of a training run: where it is, its deployable network, how to watch it."""
    print(f"\nrun folder: {cfg.run_dir}    deployable network: {summary.files['torchscript']}")
    print(f"monitor:    {tensorboard_hint(cfg.run_dir)}")


def tensorboard_hint(run_dir: str) -> str:
    """The command that shows this run beside its siblings (the run folder's parent); a run that
    wrote no TensorBoard files (``--no-tensorboard``) names its metrics.jsonl instead: the command
    was printed for runs that had nothing to show in it."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    if os.path.isdir(run_dir) and not _has_events(run_dir):
        return f"{os.path.join(run_dir, 'metrics.jsonl')} (no TensorBoard files: --no-tensorboard)"
    if not os.path.isdir(run_dir) and not _has_events(parent):  # (tune: its trials' folders)
        return f"the metrics.jsonl of each folder in {parent} (no TensorBoard files: --no-tensorboard)"
    rel = os.path.relpath(parent)
    return f"tensorboard --logdir {parent if rel.startswith('..') else rel}"


def _has_events(folder: str) -> bool:
    """Whether TensorBoard event files are in ``folder`` or its sub-folders."""
    return any(name.startswith("events.out.tfevents") for _, _, names in os.walk(folder) for name in names)
