"""Shared test helpers: small configs and running the tools as a user would."""

import os
import subprocess
import sys

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


def run_tool(tool: str, *args: str, cwd: str | None = None, timeout: int = 600):
    """Run ``python tools/<tool> args`` in a subprocess; returns CompletedProcess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout, env=env)


def run_dan(*args: str, cwd: str | None = None, timeout: int = 600):
    """Run ``python -m dan args`` (the library's entry points) in a subprocess; returns CompletedProcess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "dan", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=timeout, env=env)


def assert_user_error(proc, *fragments):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
