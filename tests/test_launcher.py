"""The tests' launcher (tests/launcher.py): a tool run forked from it is the process a fresh Python
would have been, as far as a tool or a test can tell."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import run_dan, run_script

PROBE = """\
import atexit, json, os, sys, threading, time
what = sys.argv[1]
atexit.register(lambda: open(os.path.join(sys.argv[2], "atexit"), "w").write("ran"))
def late():
    time.sleep(0.3)
    open(os.path.join(sys.argv[2], "thread"), "w").write("ran")
threading.Thread(target=late).start()  # not a daemon: the process waits for it
if what == "report":
    print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "name": __name__,
                      "env": os.environ.get("DAN_CACHE"), "stdin": sys.stdin.read(), "ppid": os.getppid(),
                      "fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[3]))
if what == "raise":
    raise ValueError("a bug")
if what == "message":
    sys.exit("a message")
if what == "sleep":
    time.sleep(60)
"""


def _probe(tmp_path, what, *args, fresh=False, timeout=60):
    """Run the probe in ``<tmp>/<forked|fresh>/``, working in its folder ``<what>/``; returns (process, folder)."""
    where = tmp_path / ("fresh" if fresh else "forked")
    (where / what).mkdir(parents=True)
    (where / "probe.py").write_text(PROBE)
    out = str(where / what)
    return run_script(str(where / "probe.py"), what, out, *args, cwd=out, timeout=timeout, fresh=fresh), where / what


def test_a_forked_run_is_what_a_fresh_python_would_have_been(tmp_path, monkeypatch):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path / "cache"))  # read by no module at import: the launcher serves
    runs = {}
    for fresh in (False, True):
        p, out = _probe(tmp_path, "report", "3", fresh=fresh)
        assert p.returncode == 3 and p.stderr == "to stderr\n", (p.returncode, p.stderr)
        runs[fresh] = json.loads(p.stdout)
        assert (out / "atexit").read_text() == "ran" and (out / "thread").read_text() == "ran"
    forked, fresh = runs[False], runs[True]
    if os.environ.get("OMP_NUM_THREADS") == "1":  # make test's workers: the launcher has one thread and forks
        assert forked["ppid"] != os.getpid()
    assert fresh["ppid"] == os.getpid()
    assert fresh["name"] == "__main__" and fresh["stdin"] == "" and fresh["fds"][:3] == [0, 1, 2]
    assert fresh["path0"] == str(tmp_path / "fresh") and fresh["env"] == str(tmp_path / "cache")
    for run in (forked, fresh):  # the same but for the folders each ran in
        del run["ppid"]
        run.update(json.loads(json.dumps(run).replace(str(tmp_path / "fresh"), "<folder>")
                              .replace(str(tmp_path / "forked"), "<folder>")))
    assert forked == fresh


@pytest.mark.parametrize("what, code, says", [("raise", 1, "ValueError: a bug"), ("message", 1, "a message")])
def test_a_forked_run_ends_as_python_does(tmp_path, what, code, says):
    for fresh in (False, True):
        p, out = _probe(tmp_path, what, fresh=fresh)
        assert p.returncode == code and says in p.stderr and p.stdout == "", (fresh, p)
        assert ("Traceback" in p.stderr) == (what == "raise"), p.stderr
        assert (out / "atexit").read_text() == "ran" and (out / "thread").read_text() == "ran"


def test_a_forked_run_past_its_timeout_is_killed(tmp_path):
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        _probe(tmp_path, "sleep", timeout=1)
    assert time.monotonic() - t < 30
    assert not (tmp_path / "forked" / "sleep" / "atexit").exists()  # killed, not ended


def test_an_entry_point_says_the_same_forked_and_fresh():
    forked, fresh = run_dan("count", "--help"), run_dan("count", "--help", fresh=True)
    assert forked.returncode == fresh.returncode == 0
    assert forked.stdout == fresh.stdout and forked.stderr == fresh.stderr
