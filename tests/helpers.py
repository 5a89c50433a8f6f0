"""Shared test helpers: small configs and running the tools as a user would."""

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from dan.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(out: str, **overrides) -> Config:
    """A seconds-long run: synthetic 16x16 images, a width-8 small-image ResNet-18."""
    cfg = Config.from_dict({
        "name": "tiny", "seed": 0, "out": out,
        "model": {"space": "resnet18_small", "args": {"width": 8}},
        "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "synthetic_size": 256,
                 "batch_size": 32},
        "train": {"epochs": 2, "lr": 0.003, "warmup_epochs": 0.5, "log_every": 1,
                  "latency_batches": [1, 4]},
        "adjoint": {"alpha": 4},
    })
    for k, v in overrides.items():
        cfg.set(k, v)
    return cfg


def run_tool(tool: str, *args: str, cwd: str | None = None, timeout: int = 600, fresh: bool = False):
    """Run ``python tools/<tool> args`` as its own process; returns CompletedProcess. A child of
    the worker's :class:`Launcher` unless ``fresh`` (a new Python: for a test about its start)."""
    return run_script(os.path.join(ROOT, "tools", tool), *args, cwd=cwd, timeout=timeout, fresh=fresh)


def run_script(path: str, *args: str, cwd: str | None = None, timeout: int = 600, fresh: bool = False):
    """Run ``python <path> args`` as its own process (as :func:`run_tool`); returns CompletedProcess."""
    return _run([path, *args], None, cwd or ROOT, timeout, fresh)


def run_dan(*args: str, cwd: str | None = None, timeout: int = 600, fresh: bool = False):
    """Run ``python -m dan args`` (the library's entry points) as its own process; returns CompletedProcess."""
    return _run(["-m", "dan", *args], "dan", cwd or ROOT, timeout, fresh)


def _run(argv: list, module: str | None, cwd: str, timeout: int, fresh: bool):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if not fresh:
        done = Launcher.run(argv, module, cwd, env, timeout)
        if done is not None:
            return done
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


class Launcher:
    """This worker's connection to ``tests/launcher.py``: a Python that imported PyTorch once and
    forks a child per tool run (that module says what a child shares with it, and why). Started
    at the first run; a run whose environment differs from the one it started with (beyond
    :attr:`_IGNORED`), a second run at once (another thread), or a launcher that refuses or
    died before forking, takes a fresh Python instead."""

    _one = None
    _lock = threading.Lock()
    # read by nothing at import: the running test's name; the latency tables' folder (dan.latency.cache_dir)
    _IGNORED = ("PYTEST_CURRENT_TEST", "DAN_CACHE")

    def __init__(self, env: dict):
        self.env = self._key(env)
        r, w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "launcher.py"), str(w)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(w,), env=env, cwd=ROOT)
        os.close(w)
        self.fd, self.buf = r, b""
        self.tmp = tempfile.mkdtemp(prefix="dan-launcher-")
        atexit.register(self.close)

    @classmethod
    def _key(cls, env: dict) -> dict:
        return {k: v for k, v in env.items() if k not in cls._IGNORED}

    @classmethod
    def run(cls, argv: list, module: str | None, cwd: str, env: dict, timeout: float):
        """CompletedProcess of the run in a forked child, or None: take a fresh Python."""
        if not hasattr(os, "fork") or not os.path.isdir("/proc/self/task") or not cls._lock.acquire(blocking=False):
            return None
        try:
            if cls._one is None or cls._one.proc.poll() is not None:
                cls._one = cls(env)
            if cls._one.env != cls._key(env):
                return None
            return cls._one._run(argv, module, cwd, env, timeout)
        finally:
            cls._lock.release()

    def _run(self, argv: list, module: str | None, cwd: str, env: dict, timeout: float):
        out, err = os.path.join(self.tmp, "stdout"), os.path.join(self.tmp, "stderr")
        for path in (out, err):
            open(path, "w").close()
        req = {"argv": argv if module is None else [argv[0], *argv[2:]], "script": module is None,
               "module": module, "cwd": cwd, "env": env, "stdout": out, "stderr": err}
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            started = self._reply(None)
        except (OSError, EOFError):
            return None  # it died before forking: nothing ran
        if "pid" not in started:
            return None  # refused (more than one thread)
        try:
            code = self._reply(timeout)["status"]
        except TimeoutError:
            os.kill(started["pid"], signal.SIGKILL)
            self._reply(None)
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout, _read(out), _read(err))
        return subprocess.CompletedProcess([sys.executable, *argv], code, _read(out), _read(err))

    def _reply(self, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise EOFError("the launcher exited")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        os.close(self.fd)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _read(path: str) -> str:
    with open(path) as f:  # as subprocess.run(text=True) decodes: the locale's encoding, universal newlines
        return f.read()


def assert_user_error(proc, *fragments):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
