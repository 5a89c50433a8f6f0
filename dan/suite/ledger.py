"""What a suite's page is computed from, kept beside the page: one small record per finished run.

A suite's run folders hold checkpoints and event files (gigabytes: never committed), and a machine's
folders do not outlive it: the search suite's 224 runs (24 h of run time) were lost with the
machine that ran them, and with them the only input ``docs/search.md`` could be rewritten from.
The ledger (``docs/search-runs.json`` beside ``docs/search.md``) keeps, per run, exactly what the
page reads, a few hundred bytes each: a retrain's small-network top-1, cost and latency, a search's
or width baseline's widths and how the search ended, and the run's wall time. Writing the page
first records every finished run folder in the ledger (a folder beats the record it replaces), then
computes the page from the ledger alone, so runs made on different machines and in different
sessions add up, and a run whose folder is gone still counts.

A search re-made (its folder lost, a run to be made needs its checkpoint) does not give the same
answer on another machine (docs/search-history.md: 5 to 8 of 12 groups differ), so the recorded retrains
built on the old supernet no longer belong to the record that replaces it: pairing them with runs
cut from the new one would mix two supernets in one seed's row. When a search's or baseline's
record is replaced by a different answer, every recorded run built on it (directly or through
another run) whose own folder is not here is moved out of the tables into ``superseded`` (kept in
the file, not counted) and is made again by the next run of the suite. A search made again can
also end on the same widths with other weights: a search's record keeps its checkpoint's SHA-256
and an inherited retrain's the one it started from (``init_from.json``), so a retrain recorded from
another supernet than its search's is superseded too, whether its folder is here or not. A run
that reads only its search's widths (a retrain from scratch) is built on the widths, not the
weights: a search made again on the same widths with other weights leaves its record. The runs
looked at are the command's plan and :attr:`Ledger.related`, every run of the suite at the same
seeds (every row, recipe and ablation): a search made again under ``--methods dan`` left greedy's
records from the old supernet in the tables, to be paired with the new one by the next full page.
A record of another seed or budget is never built on a planned run (each seed and budget has its
own searches; uniform widths depend on none), so it is neither kept nor dropped for it.

A run recorded but whose folder is gone is not run again by the suite runner unless a run to be
made needs its folder (a retrain needs its search's checkpoint): :func:`dan.suite.run.missing_folders`.
A search or width baseline needed only for its widths (a retrain from scratch) is not made again
either: its arch.json is written from its record (:func:`dan.suite.run.needed_folders`), so adding
the scratch recipe to a suite whose search folders are gone keeps every record built on them (greedy
included, which could not be made again without its search's checkpoint).
"""

from __future__ import annotations

import json
import os

from dan.checkpoint import INIT_FROM, atomic_write, file_digest, file_lock
from dan.errors import UserError
from dan.suite.files import arch_problem, is_number, latencies, network, read_arch, read_init_from, read_summary
from dan.suite.plan import Run
from dan.suite.run import elapsed_info, run_seconds

LEDGER_VERSION = 1
# What a search's or width baseline's record keeps of its arch.json: the widths and candidates (the
# widths plot) and how the search ended (the convergence tables); the probabilities are left out
# (the largest one per group is in "search").
ARCH_KEYS = ("widths", "candidates", "repaired", "budget", "search")


def ledger_path(md_path: str) -> str:
    """The ledger beside a page: ``docs/search.md`` -> ``docs/search-runs.json``."""
    stem, _ = os.path.splitext(md_path)
    return stem + "-runs.json"


def _restore(path: str) -> str:
    """How to restore a ledger: ``git checkout`` where git tracks it (the committed one), else from
    a copy (a smoke suite's, outside any repository, was told to use git)."""
    import subprocess

    folder, name = os.path.split(os.path.abspath(path))
    try:
        tracked = subprocess.run(["git", "-C", folder, "ls-files", "--error-unmatch", name], capture_output=True,
                                 timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        tracked = False
    return f"git checkout {path}" if tracked else "from a copy of it"


def _load_json(path: str):
    """The ledger's JSON (None when there is no file); an unreadable one is one line that names it
    (a truncated file, or a merge conflict in docs/search-runs.json, was a traceback)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable ledger ({str(e).splitlines()[0][:100]}): restore it "
                        f"({_restore(path)}) or move it away to start a new one") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, {}), dict)
                                             for k in ("runs", "elapsed", "superseded")):
        raise UserError(f"{path} is not a ledger (an object with the objects runs, elapsed, superseded): restore it "
                        f"or move it away to start a new one")
    # each record as the pages read it (a hand-edited record without its top-1 was a TypeError in a table)
    fix = f"restore the file ({_restore(path)}) or delete that entry (a run whose record is gone is made again)"
    for key, rec in data.get("runs", {}).items():
        problem = record_problem(rec)
        if problem:
            raise UserError(f"{path}: the record '{key}': {problem}: {fix}")
    bad = next((k for k, v in data.get("elapsed", {}).items() if not is_number(v)), None)
    if bad is not None:
        raise UserError(f"{path}: 'elapsed' of '{bad}' is not a number of seconds: {fix}")
    bad = next((k for k, v in data.get("superseded", {}).items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise UserError(f"{path}: the superseded record '{bad}' is not an object: {fix}")
    return data


def record_problem(rec) -> str | None:
    """What is wrong with a ledger record for the pages that read it (None: nothing): a retrain's
    ``small`` (top-1, FLOPs, params, latencies) or a search's or width baseline's ``arch``."""
    if not isinstance(rec, dict):
        return "not an object"
    if rec.get("seconds") is not None and not is_number(rec["seconds"]):
        return "'seconds' is not a number"
    if not all(isinstance(rec.get(k, ""), str) for k in ("label", "checkpoint_sha256", "init_sha256")):
        return "'label' or a digest is not text"
    if "arch" in rec:
        return arch_problem(rec["arch"], "arch.")
    small = rec.get("small")
    if not isinstance(small, dict):
        return "neither an object 'small' (a retrain's network) nor 'arch' (a search's widths)"
    bad = next((k for k in ("top1", "flops", "params") if not is_number(small.get(k))), None)
    if bad:
        return f"'small.{bad}' is not a number"
    lat = small.get("latency_ms")
    if lat is not None and not latencies(lat):
        return "'small.latency_ms' is not an object of numbers"
    return None


class Ledger:
    """The records of one suite's runs, keyed by run folder relative to the suite's folder
    (``flops25/dan-search-s0``), so the same run made under another ``--out`` is the same record in
    the same ledger (``reproduce.py --out D --results docs/search.md`` builds on the committed one;
    with ``--out D`` alone the page and ledger are ``D``'s own)."""

    def __init__(self, path: str, root: str):
        self.path, self.root = path, os.path.abspath(root)
        self.runs: dict = {}
        self.elapsed: dict = {}  # suite folder id -> the runner's wall time in that folder
        self.superseded: dict = {}  # records taken out of the tables: built on a replaced answer
        # runs outside the command's plan whose records may be built on its runs: looked at, with the
        # plan, when an answer is replaced (dan.suite.search.related_runs; module doc)
        self.related: list[Run] = []
        data = _load_json(path)
        if data:
            if data.get("version") != LEDGER_VERSION:
                raise UserError(f"{path}: ledger version {data.get('version')}, this dan reads {LEDGER_VERSION}; "
                                "move it away to start a new one")
            self.runs, self.elapsed = data.get("runs", {}), data.get("elapsed", {})
            self.superseded = data.get("superseded", {})

    def key(self, folder: str) -> str:
        return os.path.relpath(os.path.abspath(folder), self.root)

    # --- recording -----------------------------------------------------------------------------
    def record(self, runs: list[Run], context: list[Run] | None = None) -> list[str]:
        """Record every finished run folder of ``runs`` (replacing its old record) and the suite
        folder's elapsed runner time. Returns the keys of the records superseded: those of the runs
        in ``context`` (default ``runs``) built on a search or baseline whose record was just
        replaced by a different answer (module doc), and those of retrains whose folders say they
        started from another checkpoint than their search's recorded one (:meth:`_foreign`)."""
        changed: dict = {}  # folder -> what changed in its answer: "widths" or "weights" (the checkpoint only)
        for r in runs:
            if r.done:
                key, rec = self.key(r.out), snapshot(r, run_seconds(r))
                old = self.runs.get(key)
                what = _replaced(old, rec) if old is not None and "arch" in rec else None
                if what:
                    changed[os.path.abspath(r.out)] = what
                self.runs[key] = rec
        info = elapsed_info(runs)
        if info and info.get("id"):
            self.elapsed[info["id"]] = info["seconds"]
        context = runs if context is None else context
        if self.related:
            planned = {os.path.abspath(r.out) for r in context}
            context = list(context) + [r for r in self.related if os.path.abspath(r.out) not in planned]
        return self._supersede(context, changed) + self._foreign(context)

    def _foreign(self, runs: list[Run]) -> list[str]:
        """Move the records of finished retrains started from a checkpoint other than the one their
        search's record names (both digests known; e.g. a retrain folder kept beside a search made
        again) into ``superseded``: their folder must go for the suite to make them again."""
        dropped = []
        for r in runs:
            key = self.key(r.out)
            started = (self.runs.get(key) or {}).get("init_sha256")
            if started is None or not r.done:  # the record first: a file system look per related run otherwise
                continue
            sources = [(self.runs.get(self.key(a)) or {}).get("checkpoint_sha256")
                       for a in r.after if a not in r.arch_only]
            if any(d is not None and d != started for d in sources):
                self.superseded[key] = self.runs.pop(key)
                dropped.append(key)
        return dropped

    def _supersede(self, runs: list[Run], changed: dict) -> list[str]:
        """Move the records of the runs built on a folder in ``changed`` (transitively) whose own
        folders are not here into ``superseded``; a run whose folder is here was just recorded
        from it (or, outside the plan, is the folder a next run records) and stays. A run that
        reads only the arch.json of a folder whose weights alone changed is not built on them."""
        dropped: list[str] = []
        grew = bool(changed)
        while grew:
            grew = False
            for r in runs:
                out = os.path.abspath(r.out)
                if out in changed or not any(changed.get(os.path.abspath(a)) == "widths" or (
                        os.path.abspath(a) in changed and a not in r.arch_only) for a in r.after) or r.done:
                    continue
                changed[out] = "widths"  # made again: what is built on it is built on another answer
                grew = True
                key = self.key(r.out)
                if key in self.runs:
                    self.superseded[key] = self.runs.pop(key)
                    dropped.append(key)
        return dropped

    def save(self) -> None:
        """Write the ledger, one run per line (a new run is a one-line diff), atomically, with the
        records another runner wrote since this one read it (two suites on one ledger, e.g. two
        budgets at once, each loaded it once and the last save dropped the other's records)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        with _locked(self.path):
            self._merge(_load_json(self.path) or {})
            self._write()

    def _merge(self, data: dict) -> None:
        """Take the records of ``data`` (the file as it is now) this ledger does not hold: another
        runner's. What this one holds, or moved to ``superseded``, stays as it is here."""
        for key, rec in (data.get("runs") or {}).items():
            if key not in self.runs and key not in self.superseded:
                self.runs[key] = rec
        for key, rec in (data.get("superseded") or {}).items():
            self.superseded.setdefault(key, rec)
        for key, seconds in (data.get("elapsed") or {}).items():
            self.elapsed.setdefault(key, seconds)

    def _write(self) -> None:
        old = f',\n "superseded": {{\n{_lines(self.superseded)}\n }}' if self.superseded else ""
        text = (f'{{"version": {LEDGER_VERSION},\n "elapsed": {json.dumps(self.elapsed, sort_keys=True)},\n'
                f' "runs": {{\n{_lines(self.runs)}\n }}{old}\n}}\n')

        def write(p: str) -> None:  # its temporary file is the process's own (two runners wrote one .tmp)
            with open(p, "w") as f:
                f.write(text)

        atomic_write(write, self.path)

    # --- reading -------------------------------------------------------------------------------
    def get(self, r: Run) -> dict | None:
        return self.runs.get(self.key(r.out))

    def done(self, r: Run) -> bool:
        return self.get(r) is not None

    def small(self, r: Run) -> dict | None:
        """A finished retrain's small network: top1, flops, params, latency_ms."""
        return (self.get(r) or {}).get("small")

    def arch(self, folder: str) -> dict | None:
        """The (trimmed) arch.json of the search or width baseline in ``folder``."""
        return (self.runs.get(self.key(folder)) or {}).get("arch")

    def seconds(self, r: Run) -> float | None:
        return (self.get(r) or {}).get("seconds")

    def elapsed_seconds(self) -> float:
        """The runner's wall time, summed over every suite folder recorded."""
        return float(sum(self.elapsed.values()))


def _lines(records: dict) -> str:
    """Records as JSON object members, one per line, sorted by key."""
    return ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(records.items()))


def _replaced(old: dict, new: dict) -> str | None:
    """How a search or baseline recorded again has another answer: ``"widths"`` (other widths),
    ``"weights"`` (the same widths, but another checkpoint, both known, or another search record: a
    search made again can end on the same widths with other weights), None (the same answer)."""
    a, b = old.get("checkpoint_sha256"), new.get("checkpoint_sha256")
    if (old.get("arch") or {}).get("widths") != (new.get("arch") or {}).get("widths"):
        return "widths"
    return "weights" if old.get("arch") != new.get("arch") or (a is not None and b is not None and a != b) else None


def _locked(path: str):
    """An exclusive lock on ``.<name>.lock`` beside ``path`` while a ledger is merged and written
    (the file itself is replaced, so it cannot hold the lock); waits for the other runner."""
    folder, name = os.path.split(os.path.abspath(path))
    return file_lock(os.path.join(folder, f".{name}.lock"))


def snapshot(r: Run, seconds: float | None) -> dict:
    """The record of one finished run: what the page reads of its folder, and which checkpoint it
    is or started from (SHA-256: a search's ``checkpoints/last.pt``, a retrain's ``init_from.json``)."""
    rec: dict = {"label": r.key, "seed": r.seed, "seconds": seconds}
    if r.kind in ("search", "arch"):
        a = read_arch(r.out)  # (a truncated or hand-edited run file is one line naming it: dan.suite.files)
        rec["arch"] = {k: a[k] for k in ARCH_KEYS if k in a}
        last = os.path.join(r.out, "checkpoints", "last.pt")
        if r.kind == "search" and os.path.isfile(last):
            rec["checkpoint_sha256"] = file_digest(last)
    else:
        small = network(read_summary(r.out) or {"networks": {}}, r.out, "small")
        rec["small"] = {k: small.get(k) for k in ("top1", "flops", "params", "latency_ms")}
        init = read_init_from(r.out, INIT_FROM)
        if init.get("sha256"):
            rec["init_sha256"] = init["sha256"]
    return rec
