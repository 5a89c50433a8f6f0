"""The suite runner: :func:`run` executes the unfinished runs of a plan, each as a subprocess
(``python -m dan <command>``, started in the repository) after the runs it depends on (a run is
finished when its folder holds ``summary.json``, a search or width baseline when it holds
``arch.json``; an interrupted run is resumed), and keeps the wall time of every run
(``suite_time.json``) and of the suite (``suite_elapsed.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

from dan.checkpoint import write_json
from dan.errors import UserError
from dan.suite.plan import ROOT, Run


def run(runs: list[Run], log=print, jobs: int = 1, ledger=None) -> None:
    """Run every unfinished run, each after the runs it depends on; resume the ones a previous
    call left half-done. ``jobs > 1`` runs that many at once, each on one thread
    (``OMP_NUM_THREADS=1``: small CPU networks gain more from two processes than from two threads
    in one; latencies measured meanwhile share the machine). A run recorded in ``ledger``
    (:class:`dan.suite.ledger.Ledger`) whose folder is gone is skipped too, unless a run to be
    made needs its folder; every run that finishes is recorded there at once (and the ledger
    saved), so an interrupted suite loses no finished run's record."""
    pending = missing_folders(runs, ledger)
    for r in runs:
        if r.done:
            log(f"[skip] {r.out} (finished)")
        elif r not in pending:
            log(f"[skip] {r.out} (recorded in {ledger.path}; its folder is not needed)")
    env = dict(os.environ, OMP_NUM_THREADS="1") if jobs > 1 else None
    active: list = []  # (run, process, log file, start time)
    started = time.time()
    try:
        _run_loop(pending, active, env, jobs, log, ledger, runs)
    finally:
        add_elapsed(runs, time.time() - started)


def missing_folders(runs: list[Run], ledger=None) -> list[Run]:
    """The runs to make: those neither finished in their folder nor recorded in ``ledger`` (a
    :class:`dan.suite.ledger.Ledger`, or None), plus every recorded run whose folder one of those
    needs (a retrain reads its search's arch.json and checkpoint), in plan order."""
    todo = [r for r in runs if not r.done and (ledger is None or not ledger.done(r))]
    by_out = {os.path.abspath(r.out): r for r in runs}
    need = {id(r) for r in todo}
    stack = list(todo)
    while stack:
        for dep in stack.pop().after:
            d = by_out.get(os.path.abspath(dep))
            if d is not None and not d.done and id(d) not in need:
                need.add(id(d))
                stack.append(d)
    return [r for r in runs if id(r) in need]


def elapsed_seconds(runs: list[Run]) -> float:
    """Wall time the suite runner has spent on these runs, summed over its invocations."""
    info = elapsed_info(runs)
    return info["seconds"] if info else 0.0


def elapsed_info(runs: list[Run]) -> dict | None:
    """The suite folder's ``suite_elapsed.json``: {"seconds": ..., "id": ...} (None before any run;
    folders written before the id existed have none)."""
    path = _elapsed_path(runs)
    if path and os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
        return {"seconds": float(data.get("seconds", 0.0)), "id": data.get("id")}
    return None


def add_elapsed(runs: list[Run], seconds: float) -> None:
    path = _elapsed_path(runs)
    if not path or not os.path.isdir(os.path.dirname(path)):
        return
    info = elapsed_info(runs) or {"seconds": 0.0, "id": None}
    write_json({"seconds": info["seconds"] + seconds, "id": info["id"] or uuid.uuid4().hex[:12]}, path, indent=None)


def suite_root(runs: list[Run]) -> str | None:
    """The suite's folder: the plan's ``root``, else the runs' common folder (None without runs)."""
    if not runs:
        return None
    return runs[0].root or os.path.commonpath([os.path.abspath(r.out) for r in runs])


def _elapsed_path(runs: list[Run]) -> str | None:
    root = suite_root(runs)
    return os.path.join(root, "suite_elapsed.json") if root else None


def _run_loop(pending: list, active: list, env, jobs: int, log, ledger, everything: list) -> None:
    """Start the pending runs as their inputs finish, at most ``jobs`` at once; record each finished
    run in ``ledger`` (its records built on a replaced answer among ``everything`` are superseded)."""
    failed = None
    while (pending and failed is None) or active:
        ready = [r for r in pending if all(os.path.isfile(os.path.join(a, "arch.json")) or
                                           os.path.isfile(os.path.join(a, "summary.json")) for a in r.after)]
        blocked = [r for r in pending if r not in ready]
        while failed is None and ready and len(active) < max(1, jobs):
            r = ready.pop(0)
            pending.remove(r)
            active.append(_start(r, env, log))
        if not active:
            if blocked and failed is None:
                raise UserError(f"{blocked[0].out} waits for {blocked[0].after}, which no run produces")
            break
        time.sleep(0.5)
        for item in list(active):
            r, p, f, t0 = item
            if p.poll() is None:
                continue
            active.remove(item)
            f.close()
            _add_seconds(r, time.time() - t0)
            if ledger is not None and r.done:
                for key in ledger.record([r], context=everything):
                    log(f"[superseded] {key}: built on the answer {r.out} replaced; the next run of the suite makes it again")
                ledger.save()
            if p.returncode != 0 and failed is None:
                failed = (r, p.returncode)
    if failed is not None:
        r, code = failed
        raise UserError(f"run failed (exit {code}): see {r.out}.log; fix it and run again (finished runs are kept)")


def _start(r: Run, env, log) -> tuple:
    """Start one run (resumed from its last checkpoint when it has one); returns
    (run, process, log file, start time)."""
    cmd = r.command()
    if os.path.isfile(os.path.join(r.out, "checkpoints", "last.pt")):
        cmd.append("--resume")
    elif os.path.isdir(r.out):
        # an attempt killed before its first checkpoint: nothing finished is in it (finished
        # runs were skipped), and the tools refuse a new run over its events and
        # metrics.jsonl, so the suite clears its own folder (as loop.start_managed does)
        log(f"[restart] {r.out} (killed before its first checkpoint)")
        shutil.rmtree(r.out)
    log(f"[run] {' '.join(cmd)}")
    os.makedirs(os.path.dirname(os.path.abspath(r.out)) or ".", exist_ok=True)
    f = open(r.out.rstrip("/") + ".log", "a")
    return r, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env), f, time.time()


def _add_seconds(run: Run, seconds: float) -> None:
    """Add one invocation's wall time to the run's ``suite_time.json`` (all invocations summed)."""
    path = os.path.join(run.out, "suite_time.json")
    if not os.path.isdir(run.out):
        return
    total = run_seconds(run) if os.path.isfile(path) else 0.0
    write_json({"seconds": total + seconds}, path, indent=None)


def run_seconds(run: Run) -> float | None:
    """Wall time of a finished run: what :func:`run` recorded, else (runs started before it
    recorded times) from the first TensorBoard event file's creation to the run's last file."""
    path = os.path.join(run.out, "suite_time.json")
    if os.path.isfile(path):
        with open(path) as f:
            return float(json.load(f)["seconds"])
    marker = os.path.join(run.out, "arch.json" if run.kind in ("search", "arch") else "summary.json")
    if not os.path.isfile(marker):
        return None
    starts = []
    for name in os.listdir(run.out):
        if name.startswith("events.out.tfevents."):
            try:
                starts.append(float(name.split(".")[3]))
            except (IndexError, ValueError):
                pass
    return os.path.getmtime(marker) - min(starts) if starts else None
