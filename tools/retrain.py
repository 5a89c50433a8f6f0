"""Retrain the architecture DAN search found, from scratch, and extract the small network.

Usage:
    python tools/retrain.py runs/<search>/arch.json                      # adjoint retrain (default)
    python tools/retrain.py runs/<search>/arch.json --method standard    # the found small network alone
    python tools/retrain.py runs/<search>/arch.json --epochs 30 --out runs/r --resume

The search's own config (stored in arch.json) is the starting point: same data, model and
training settings, but the whole training split (no held-out part). Flags override it as in
train.py. Writes the same run folder as train.py (default: <search folder>/retrain-<method>) and
prints the summary table with the budget.
"""

from dan.cli import run_tool
from dan.cli.retrain import main

if __name__ == "__main__":
    run_tool(main)
