"""Optuna tuning of DAN's outer hyperparameters (search + short retrain per trial).

Usage: python tools/tune.py --help   (the same as: dan tune --help)
The command's code and its full usage text: dan/cli/tune.py.
"""

from dan.cli import run_tool
from dan.cli.tune import main

if __name__ == "__main__":
    run_tool(main)
