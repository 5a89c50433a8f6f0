"""Retrain the architecture DAN search found and extract the small network.

Usage: python tools/retrain.py --help   (the same as: dan retrain --help)
The command's code and its full usage text: dan/cli/retrain.py.
"""

from dan.cli import run_tool
from dan.cli.retrain import main

if __name__ == "__main__":
    run_tool(main)
