"""Configs another DAN saved, read by this one: a run's ``config.yaml``, its checkpoint's config and
the config an ``arch.json`` embeds.

An upgrade audit read old runs with today's code and found four ways they failed:

* a value an older DAN accepted and today's checks refuse stopped the retrain and the resume of
  the run (``search.warmup_epochs: 0.5``, rounded up by 6c13876): :func:`read_former` reads it as
  the older code ran it (:data:`dan.config.FORMER_READINGS`), and what is still refused names the
  file and the DAN that wrote it (:func:`refusal`);
* a retrain refused sections it does not read (the search's, another method's): :func:`used_by`
  says which keys a kind of run reads, for the retrain's base and a resume's comparison;
* ``--config <old run>/config.yaml`` ran today's search algorithm without a word:
  :func:`older_config_notes` names the keys added since, which the file lacks, and the ``--set``
  that gives the old behaviour (``config.yaml`` now records its DAN: ``Config.code``);
* an ``arch.json`` a newer DAN wrote was refused as if the user had typed its unknown key:
  :func:`newer_key` names the file and the DAN that wrote it.
"""

from __future__ import annotations

import copy
import os
import re

from dan.config import BEFORE_KEY, FORMER_READINGS, Config, flatten
from dan.errors import UserError

# The top-level keys every config.yaml a run saved holds, since the first (a user's own file rarely
# sets device and out with every section): one of those, without `code`, an older DAN wrote.
RUN_CONFIG_KEYS = ("name", "seed", "device", "out", "model", "data", "train", "adjoint", "search")


def saved_by_run(d) -> bool:
    """Whether a config file's mapping ``d`` is a config.yaml a DAN run saved (it records its DAN,
    ``code``, or holds every key of :data:`RUN_CONFIG_KEYS`, as an older DAN's did), not a user's
    own file (``configs/*.yaml``)."""
    return isinstance(d, dict) and (d.get("code") is not None or all(k in d for k in RUN_CONFIG_KEYS))


def read_former(d: dict) -> tuple[dict, list[str]]:
    """A saved config ``d`` (nested, as YAML holds it) with each value an older DAN accepted and this
    one refuses replaced by the value that runs the same today (:data:`dan.config.FORMER_READINGS`;
    None: the key dropped). Returns the new dict (``d`` is not changed) and a note per value read,
    e.g. ``"search.warmup_epochs=0.5 read as 1 (DAN before 0e7ee65 rounded it up to whole epochs)"``."""
    out, notes = copy.deepcopy(d) if isinstance(d, dict) else d, []
    for key, (commit, did, reading) in FORMER_READINGS.items():
        *path, last = key.split(".")
        section = out
        for p in path:
            section = section.get(p) if isinstance(section, dict) else None
        if not isinstance(section, dict) or last not in section:
            continue
        value = section[last]
        new = reading(value)
        if new == value and type(new) is type(value):
            continue
        if new is None:
            del section[last]
        else:
            section[last] = new
        read = "dropped" if new is None else f"read as {new!r}"
        notes.append(f"{key}={value!r} {read} (DAN before {commit} {did})")
    methods = out.get("methods") if isinstance(out, dict) else None
    if isinstance(methods, dict):  # a section left empty by a dropped key: as if never written
        for name in [n for n, s in methods.items() if s == {}]:
            del methods[name]
    return out, notes


def used_by(key: str, tool: str, method: str | None = None) -> bool:
    """Whether the config key ``key`` (dotted) can change what a run of ``tool`` computes
    (``"search.py"``, ``"train.py"``, ``"retrain.py"``: :func:`dan.loop._tool`) with
    ``train.method`` ``method``: ``search.*`` a search only, ``methods.<name>.*`` a run of that
    method only (a search reads none), ``tune.*`` none. A resume of an old train run listed
    ``search.arch_lr=0.01, search.arch_objective='kl', ...`` as the run's own settings."""
    section = key.split(".", 1)[0]
    if section == "search":
        return tool == "search.py"
    if section == "methods":
        parts = key.split(".")
        return tool != "search.py" and (len(parts) < 2 or parts[1] == method)
    return section != "tune"


def writer(code) -> str:
    """Who wrote a file that records ``code`` (:func:`dan.checkpoint.code_version`), or none."""
    return f"DAN {code}" if isinstance(code, str) and code else "an older DAN (before its files recorded the version)"


def newer_key(error: UserError, where: str, code) -> UserError:
    """``error`` (an unknown config key of a saved config) said of the file ``where`` that
    ``code``'s DAN wrote: an audit's arch.json said only ``unknown config key 'search.future_knob'``,
    as if the user had typed it."""
    from dan.checkpoint import code_version

    line = re.sub(r" \(known: [^)]*\)$", "", str(error))
    return UserError(f"{where} was written by {writer(code)}, which knows keys this DAN ({code_version()}) does "
                     f"not: {line}; use that version of DAN or a newer one")


def refusal(error: UserError, where: str, code) -> UserError:
    """``error`` (today's checks refusing a value a saved config holds) said of the file ``where``
    that an older DAN wrote (``code``): the audit's retrain of a 6c13876 search said only
    "search.arch_samples 1 mixes one candidate per group...", not that the value came from it."""
    return UserError(f"{str(error).rstrip('.')} (the value comes from {where}, written by {writer(code)}, which "
                     f"accepted it: --set the key, or use that version of DAN)")


def refused(cfg: Config) -> str | None:
    """The line today's checks (:meth:`Config.validate`) refuse ``cfg`` with, or None."""
    try:
        cfg.validate()
    except UserError as e:
        return str(e)
    return None


def saved_refusal(saved: Config | None, error: UserError) -> bool:
    """Whether ``saved`` (a config as a file held it) alone is refused with ``error``'s line: the
    refused value came from the file, not from what the user typed."""
    return saved is not None and refused(saved) == str(error)


def run_config(run_dir: str) -> tuple[Config | None, object]:
    """The config a run folder saved (``config.yaml``, read as :func:`read_former` reads it) and the
    code its checkpoint records, each None when there is none to read."""
    from dan.checkpoint import load_checkpoint
    from dan.config import load_yaml_file

    try:
        d, _ = read_former(load_yaml_file(os.path.join(run_dir, "config.yaml"), "config"))
        saved = Config.from_dict(d)
    except (UserError, OSError):
        return None, None
    try:
        rng = load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt")).get("rng")
    except (UserError, OSError, AttributeError):
        rng = None
    return saved, rng.get("code") if isinstance(rng, dict) else None


def resume_former(cfg: Config) -> list[str]:
    """Before a resume: each value of ``cfg`` (the command's) that equals a value the run's own
    ``config.yaml`` holds and :func:`read_former` reads (an older DAN's, refused today) is read the
    same way, so that the same command resumes the run. Returns a note per value read. An audit's
    resume of a 6c13876 search made with ``--warmup-epochs 0.5`` was refused by the same command
    and, with ``--warmup-epochs 1``, as "written with search.warmup_epochs=0.5, not 1.0"."""
    from dan.config import load_yaml_file

    try:
        raw = load_yaml_file(os.path.join(cfg.run_dir, "config.yaml"), "config")
    except (UserError, OSError):
        return []
    if not isinstance(raw, dict):
        return []
    flat_raw, flat_now = flatten(raw), flatten(cfg.to_dict())
    notes = []
    for key, (commit, did, reading) in FORMER_READINGS.items():
        value = flat_raw.get(key)
        if key not in flat_raw or key not in flat_now or flat_now[key] != value or reading(value) == value:
            continue
        new = reading(value)
        if key.startswith("methods."):
            _, name, option = key.split(".")
            del cfg.methods[name][option]
            if not cfg.methods[name]:
                del cfg.methods[name]
        else:
            cfg.set(key, new)
        notes.append(f"note: {key}={value!r} {'dropped' if new is None else f'read as {new!r}'}, as the run's "
                     f"DAN did (before {commit} DAN {did})")
    return notes


def older_config_notes(path: str, d: dict, tool: str | None = None) -> tuple[dict, list[str]]:
    """A ``--config`` file ``path`` (its YAML ``d``) that another DAN saved for a run: ``d`` read as
    :func:`read_former` reads it, and the notes to print. A file that records this DAN
    (``code``), or that neither records a DAN nor looks like a run's saved config (a user's own,
    ``configs/*.yaml``), is returned as it is, without notes. The notes name the keys added since
    (:data:`dan.config.BEFORE_KEY`) that the file lacks and that a run of ``tool`` reads (None: any):
    the run takes today's behaviour for them (nothing the run does is changed), and the note gives
    the ``--set`` that repeats the old run. An audit's ``--config <old run>/config.yaml`` ran today's
    algorithm (none of tau_anneal, budget_control, settle... in the file) without a word."""
    from dan.checkpoint import code_version

    if not isinstance(d, dict):
        return d, []
    code = d.get("code")
    if code == code_version() or not saved_by_run(d):
        return d, []
    d, notes = read_former(d)
    notes = [f"note: {path}: {n}" for n in notes]
    flat = flatten(d)
    lacks = [k for k in BEFORE_KEY if k not in flat and (tool is None or used_by(k, tool))]
    if lacks:
        now = flatten(Config().to_dict())
        sets = " ".join(f"--set {k}={BEFORE_KEY[k]}" for k in lacks)
        notes.append(f"note: {path} was written by {writer(code)}, which had none of "
                     f"{', '.join(f'{k} (today {now[k]!r})' for k in lacks)}: this run takes today's; to repeat "
                     f"the old run's algorithm, {sets}")
    return d, notes


