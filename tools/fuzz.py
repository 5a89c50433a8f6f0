"""Fuzz the tools with corrupted inputs for longer than CI does (dan/fuzz.py; needs hypothesis).

Usage:
    python tools/fuzz.py --examples 2000               # split over the four properties
    python tools/fuzz.py --examples 200 --case budget  # one property

Each example runs train.py / search.py / retrain.py in-process on a tiny synthetic task with a
corrupted arch.json, config, --set value or budget, and checks: exit 0, or exit 2 with exactly one
'error:' line; a finished run's folder unchanged. Prints one line per failing property (the
smallest failing example hypothesis found) and a summary line; exits 1 when any failed.
"""

from dan.cli import run_tool
from dan.cli.fuzz import main

if __name__ == "__main__":
    run_tool(main)
