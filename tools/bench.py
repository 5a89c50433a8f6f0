"""Benchmarks on this machine, as ratios measured in one run.

Usage: python tools/bench.py --help   (the same as: dan bench --help)
The command's code and its full usage text: dan/cli/bench.py.
"""

from dan.cli import run_tool
from dan.cli.bench import main

if __name__ == "__main__":
    run_tool(main)
