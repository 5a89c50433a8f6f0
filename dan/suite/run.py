"""The suite runner: :func:`run` executes the unfinished runs of a plan, each as a subprocess
(``python -m dan <command>``, started in the repository) after the runs it depends on (a run is
finished when its folder holds ``summary.json``, a search or width baseline when it holds
``arch.json``; an interrupted run is resumed), and keeps the wall time of every run
(``suite_time.json``) and of the suite (``suite_elapsed.json``). ``touch <suite folder>/suite_stop``
stops a suite between runs: nothing new starts, the running ones finish and are recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid

from dan.checkpoint import LockHeld, check_no_links, file_lock, open_no_link, save_json
from dan.errors import UserError
from dan.suite.files import read_seconds
from dan.suite.plan import RESTORED, ROOT, Run

STOP_FILE = "suite_stop"  # in the suite's folder: start no new run, let the running ones finish


def run(runs: list[Run], log=print, jobs: int = 1, ledger=None) -> None:
    """Run every unfinished run, each after the runs it depends on; resume the ones a previous
    call left half-done. ``jobs > 1`` runs that many at once, each on one thread
    (``OMP_NUM_THREADS=1``: small CPU networks gain more from two processes than from two threads
    in one; latencies measured meanwhile share the machine). A run recorded in ``ledger``
    (:class:`dan.suite.ledger.Ledger`) whose folder is gone is skipped too, unless a run to be
    made needs its folder; every run that finishes is recorded there at once (and the ledger
    saved), so an interrupted suite loses no finished run's record."""
    with _suite_lock(suite_root(runs)):
        _run_all(runs, log, jobs, ledger)


SUITE_LOCK = ".suite-lock"  # in the suite's folder, held by its runner (a run's own is .lock)


@contextlib.contextmanager
def _suite_lock(root: str | None):
    """One runner per suite folder (:func:`dan.checkpoint.file_lock` on :data:`SUITE_LOCK`): a
    second one cleared the first's live run folder as "killed before its first checkpoint", and
    both wrote the same records."""
    if root is None:
        yield
        return
    os.makedirs(root, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(os.path.join(root, SUITE_LOCK), wait=False))
        except LockHeld as e:
            raise UserError(f"{root} is in use by another reproduce.py" + (f" (process {e.pid})" if e.pid.isdigit()
                                                                            else "")
                            + ": wait for it to end, or give another --out") from None
        yield


def _run_all(runs: list[Run], log, jobs: int, ledger) -> None:
    """:func:`run` inside the suite folder's lock."""
    pending, restored = needed_folders(runs, ledger)
    for r in runs:
        if r.done:
            log(f"[skip] {r.out} (finished)")
        elif r in restored:
            if not os.path.isfile(os.path.join(r.out, "arch.json")):
                log(f"[restore] {r.out}/arch.json (recorded in {ledger.path}: its widths; a run to be made "
                    "reads only them)")
                p = subprocess.run(restore(r, ledger, runs), cwd=ROOT, capture_output=True, text=True)
                if p.returncode != 0:
                    raise UserError(f"could not restore {r.out}/arch.json from {ledger.path}: "
                                    f"{(p.stderr.strip().splitlines() or ['?'])[-1]}")
            else:
                log(f"[skip] {r.out} (its arch.json restored from {ledger.path} earlier)")
        elif r not in pending:
            log(f"[skip] {r.out} (recorded in {ledger.path}; its folder is not needed)")
    env = dict(os.environ, OMP_NUM_THREADS="1") if jobs > 1 else None
    active: list = []  # (run, process, log file, start time)
    started = time.time()
    try:
        _run_loop(pending, active, env, jobs, log, ledger, runs)
    except KeyboardInterrupt:
        _stop_children(active)
        raise
    finally:
        add_elapsed(runs, time.time() - started)


def _stop_children(active: list) -> None:
    """After Ctrl-C, the runs in progress end too before the runner does: a SIGINT sent to the runner
    alone left its run training, and the next invocation started the same run beside it. A Ctrl-C
    at the terminal reached them already; the others are interrupted (each keeps its finished
    epochs) and waited for."""
    import signal

    deadline = time.time() + 2.0
    for _, p, _, _ in active:
        try:
            p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
    for _, p, f, _ in active:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        f.close()


def missing_folders(runs: list[Run], ledger=None) -> list[Run]:
    """The runs to make: those neither finished in their folder nor recorded in ``ledger`` (a
    :class:`dan.suite.ledger.Ledger`, or None), plus every recorded run whose folder one of those
    needs (a retrain reads its search's arch.json and checkpoint), in plan order. A recorded search
    needed only for its arch.json (:attr:`Run.arch_only`) is not among them: it is restored
    (:func:`needed_folders`)."""
    return needed_folders(runs, ledger)[0]


def needed_folders(runs: list[Run], ledger) -> tuple[list[Run], list[Run]]:
    """``(to make, to restore)``: the runs to make (:func:`missing_folders`), and the recorded
    searches and width baselines whose folders are gone that those need only for their arch.json
    (a retrain from scratch; any retrain of a width baseline): their arch.json is written from the
    record's widths (:func:`restore`) instead of being made again. A search made again on another
    machine gives another answer and would supersede every record built on the old one; a greedy
    baseline cannot be made again without its search's checkpoint, so restoring it is what lets a
    scratch row be added to a seed whose search folder is gone. Runs already restored are among them.

    A width baseline built on a run that is itself to be made (greedy on a search made again for
    another run) is made again, not restored: the new search's answer supersedes its record, and a
    retrain of the old widths would be recorded on a record that no longer counts."""
    by_out = {os.path.abspath(r.out): r for r in runs}
    forced: set = set()  # restorable by record, but built on a run to be made: made again
    while True:
        need, restorable = _needed(runs, by_out, ledger, forced)
        stale = {id(d) for d in runs if id(d) in restorable
                 and any(id(by_out.get(os.path.abspath(a))) in need for a in d.after)}
        if not stale:
            break
        forced |= stale
    return [r for r in runs if id(r) in need], [r for r in runs if id(r) in restorable - need]


def _needed(runs: list[Run], by_out: dict, ledger, forced: set) -> tuple[set, set]:
    """One pass of :func:`needed_folders` (``by_out``: run folder -> run): the ids of the runs to
    make and of those to restore, never restoring one in ``forced``."""
    todo = [r for r in runs if not r.done and (ledger is None or not ledger.done(r))]
    need = {id(r) for r in todo}
    restorable: set = set()
    stack = list(todo)
    while stack:
        r = stack.pop()
        for dep in r.after:
            d = by_out.get(os.path.abspath(dep))
            if d is None or d.done or id(d) in need:
                continue
            if (ledger is not None and d.kind in ("search", "arch") and dep in r.arch_only
                    and id(d) not in forced and (ledger.arch(d.out) or {}).get("widths")):
                restorable.add(id(d))
                continue
            need.add(id(d))
            stack.append(d)
    return need, restorable


def restore(r: Run, ledger, runs: list[Run] = ()) -> list:
    """Write the :data:`RESTORED` marker (the record's widths) into the folder of the recorded
    search or width baseline ``r`` and return the command that writes its arch.json from it
    (:func:`restore_command`); the marker keeps the folder from being taken for a finished run,
    and it is cleared if a run later needs the search's checkpoint."""
    os.makedirs(r.out, exist_ok=True)
    save_json({"ledger": ledger.path, "key": ledger.key(r.out), "widths": ledger.arch(r.out)["widths"]},
               os.path.join(r.out, RESTORED))
    return restore_command(r, runs)


def restore_command(r: Run, runs: list[Run] = ()) -> list:
    """``dan baseline fixed`` with the flags ``r``'s config came from and the widths of the marker
    :func:`restore` writes (nothing is written here: ``--dry-run`` prints it). The flags: a search's
    own (config, seed, budget, settings); a width baseline's without its method; for one that read a
    supernet (greedy), the flags of the search in ``runs`` that made it, whose config its arch.json
    carries."""
    source, skip = r, 0
    if r.kind == "arch":
        skip = 1  # the method: uniform, random, greedy
        if "--supernet" in r.args:
            by_out = {os.path.abspath(x.out): x for x in runs}
            source = next((by_out[os.path.abspath(a)] for a in r.after if os.path.abspath(a) in by_out), None)
            if source is None:
                raise UserError(f"cannot restore {r.out}/arch.json: the search its supernet came from is not "
                                "in the suite's plan; run the suite with that budget's searches")
            skip = 0
    args, flags = list(source.args[skip:]), []
    while args:
        a = args.pop(0)
        if a == "--out":
            args.pop(0)
        else:
            flags.append(a)
    return [sys.executable, "-m", "dan", "baseline", "fixed", *flags, "--widths", os.path.join(r.out, RESTORED),
            "--out", r.out]


def elapsed_seconds(runs: list[Run]) -> float:
    """Wall time the suite runner has spent on these runs, summed over its invocations."""
    info = elapsed_info(runs)
    return info["seconds"] if info else 0.0


def elapsed_info(runs: list[Run]) -> dict | None:
    """The suite folder's ``suite_elapsed.json``: {"seconds": ..., "id": ...} (None before any run;
    folders written before the id existed have none)."""
    path = _elapsed_path(runs)
    if path and os.path.isfile(path):
        data = read_seconds(path, "delete it (the runner's time in that folder then counts from 0; a ledger keeps "
                                  "what it recorded)")
        return {"seconds": float(data["seconds"]), "id": data.get("id") if isinstance(data.get("id"), str) else None}
    return None


def add_elapsed(runs: list[Run], seconds: float) -> None:
    path = _elapsed_path(runs)
    if not path or not os.path.isdir(os.path.dirname(path)):
        return
    info = elapsed_info(runs) or {"seconds": 0.0, "id": None}
    save_json({"seconds": info["seconds"] + seconds, "id": info["id"] or uuid.uuid4().hex[:12]}, path, indent=None)


def suite_root(runs: list[Run]) -> str | None:
    """The suite's folder: the plan's ``root``, else the runs' common folder (None without runs)."""
    if not runs:
        return None
    return runs[0].root or os.path.commonpath([os.path.abspath(r.out) for r in runs])


def _elapsed_path(runs: list[Run]) -> str | None:
    root = suite_root(runs)
    return os.path.join(root, "suite_elapsed.json") if root else None


def ready_runs(pending: list[Run], unfinished: set, made=lambda folder: True) -> list[Run]:
    """The runs of ``pending``, in order, whose inputs are made: none of their ``after`` folders is
    in ``unfinished`` (absolute paths of the runs still to finish) and ``made(folder)`` holds for each."""
    return [r for r in pending if all(os.path.abspath(a) not in unfinished and made(a) for a in r.after)]


def schedule_seconds(runs: list[Run], seconds, jobs: int = 2) -> float:
    """Wall time of making ``runs`` from nothing as :func:`run` starts them (in plan order, each once
    its inputs are made, at most ``jobs`` at once), run ``r`` taking ``seconds(r)``. Summed time over
    ``jobs`` is only a lower bound: a lane idles while every ready run waits for a search.

    >>> a = Run("search", 0, "search", [], "/s", kind="search")
    >>> b = Run("retrain", 0, "retrain", [], "/r", after=["/s"])
    >>> schedule_seconds([a, b], lambda r: {"/s": 10.0, "/r": 5.0}[r.out])    # b waits for a: 15 s, not 7.5
    15.0
    """
    pending, active, now = list(runs), [], 0.0
    while pending or active:
        unfinished = {os.path.abspath(r.out) for r in pending} | {os.path.abspath(r.out) for _, r in active}
        for r in ready_runs(pending, unfinished)[:max(1, jobs) - len(active)]:
            pending.remove(r)
            active.append((now + seconds(r), r))
        if not active:
            raise ValueError(f"{pending[0].out} waits for {pending[0].after}, which no run produces")
        now = min(end for end, _ in active)
        active = [(end, r) for end, r in active if end > now]
    return now


def _run_loop(pending: list, active: list, env, jobs: int, log, ledger, everything: list) -> None:
    """Start the pending runs as their inputs finish, at most ``jobs`` at once; record each finished
    run in ``ledger`` (its records built on a replaced answer among ``everything`` are superseded).
    While the suite folder holds :data:`STOP_FILE`, no run starts; once the running ones finish the
    loop ends (the file removed), so a long suite stops without losing the runs in progress."""
    failed = None
    stop = os.path.join(suite_root(everything) or ".", STOP_FILE)
    while (pending and failed is None) or active:
        draining = os.path.isfile(stop)
        # a folder still to be made is not ready even if it holds an arch.json (restored ones do)
        waiting = {os.path.abspath(x.out) for x in pending} | {os.path.abspath(a[0].out) for a in active}
        ready = ready_runs(pending, waiting, lambda a: os.path.isfile(os.path.join(a, "arch.json"))
                           or os.path.isfile(os.path.join(a, "summary.json")))
        blocked = [r for r in pending if r not in ready]
        while failed is None and not draining and ready and len(active) < max(1, jobs):
            r = ready.pop(0)
            pending.remove(r)
            active.append(_start(r, env, log, suite_root(everything)))
        if not active and draining:
            os.remove(stop)
            log(f"[stopped] {stop} asked the suite to stop: every started run finished, {len(pending)} not "
                "started; the same command goes on from here")
            break
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
                    log(f"[superseded] {key}: built on another answer or checkpoint than the one recorded now "
                        f"({r.out}); the next run of the suite makes it again once its folder is gone")
                ledger.save()
            if p.returncode != 0 and failed is None:
                failed = (r, p.returncode)
    if failed is not None:
        r, code = failed
        said = _last_error(r.out.rstrip("/") + ".log")  # the run's own line says what to fix
        raise UserError(f"run failed (exit {code}){': ' + said if said else ''}: see {r.out}.log; fix it and run "
                        f"again (finished runs are kept)")


def _last_error(log_path: str) -> str:
    """The last ``error:`` line of a run's log, without the prefix ('' when there is none)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.startswith("error: ")]
    except OSError:
        return ""
    return lines[-1][len("error: "):] if lines else ""


def clear_reason(r: Run) -> str:
    """Why the runner clears an unfinished run's folder (``start_state`` ``clear``); the dry run says it too."""
    if os.path.isfile(os.path.join(r.out, RESTORED)):
        return "restored from the ledger, now made again"
    return "killed before its first checkpoint"


def start_state(r: Run) -> str:
    """How :func:`_start` starts an unfinished run: ``resume`` (its folder holds a checkpoint),
    ``clear`` (a folder without one: cleared first) or ``new`` (no folder); ``--dry-run`` says it."""
    if os.path.isfile(os.path.join(r.out, "checkpoints", "last.pt")):
        return "resume"
    return "clear" if os.path.isdir(r.out) else "new"


def _start(r: Run, env, log, root: str | None = None) -> tuple:
    """Start one run (resumed from its last checkpoint when it has one) of the suite in ``root``;
    returns (run, process, log file, start time)."""
    cmd = r.command()
    state = start_state(r)
    if state == "resume":
        cmd.append("--resume")
    elif state == "clear":
        # an attempt killed before its first checkpoint: nothing finished is in it (finished
        # runs were skipped), and the tools refuse a new run over its events and
        # metrics.jsonl, so the suite clears its own folder (as loop.start_managed does); the
        # same for a search restored from the ledger that a run now needs the checkpoint of, or a
        # width baseline restored earlier whose search is made again now
        check_clearable(r.out, root)
        log(f"[restart] {r.out} ({clear_reason(r)})")
        shutil.rmtree(r.out)
    log(f"[run] {' '.join(cmd)}")
    os.makedirs(os.path.dirname(os.path.abspath(r.out)) or ".", exist_ok=True)
    # appended to in place: not through a link (a given suite folder's)
    f = os.fdopen(open_no_link(r.out.rstrip("/") + ".log", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")
    return r, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env), f, time.time()


# what an interrupted run (or a restored search) leaves in its folder; anything else is not the suite's
_RUN_FILES = ("config.yaml", "metrics.jsonl", "suite_time.json", "init_from.json", "checkpoints", "teacher", RESTORED)


def check_clearable(folder: str, root: str | None = None) -> None:
    """Refuse to clear a folder that holds a file no run writes (a user's notes were deleted with
    it), that a live run holds (its ``.lock``: an interrupted runner's run still training), or that
    is reached through a symbolic link below the suite's folder ``root`` (its target was cleared)."""
    from dan.loop import check_run_lock

    check_no_links(folder, root if root and os.path.abspath(root) != os.path.abspath(folder)
                   else os.path.dirname(os.path.abspath(folder)))
    check_run_lock(folder)
    if os.path.isfile(os.path.join(folder, RESTORED)):  # the suite's own: the arch.json it restored
        return
    for name in os.listdir(folder):
        if name in _RUN_FILES or name.startswith(("events.out.tfevents", "config.before-resume-",
                                                  "arch.before-resume-", ".")):
            continue
        raise UserError(f"{folder} holds {name}, which no run writes, and the suite would clear the folder to "
                        f"make its run again: move {name} away, or give another --out")


def _add_seconds(run: Run, seconds: float) -> None:
    """Add one invocation's wall time to the run's ``suite_time.json`` (all invocations summed)."""
    path = os.path.join(run.out, "suite_time.json")
    if not os.path.isdir(run.out):
        return
    total = run_seconds(run) if os.path.isfile(path) else 0.0
    save_json({"seconds": total + seconds}, path, indent=None)


def run_seconds(run: Run) -> float | None:
    """Wall time of a finished run: what :func:`run` recorded, else (runs started before it
    recorded times) from the first TensorBoard event file's creation to the run's last file."""
    path = os.path.join(run.out, "suite_time.json")
    if os.path.isfile(path):
        return float(read_seconds(path, "delete it (the run's time is then taken from its files)")["seconds"])
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
