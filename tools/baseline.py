"""Width baselines at a search's budget -> arch.json (retrain it like a search's).

Usage: python tools/baseline.py --help   (the same as: dan baseline --help)
The command's code and its full usage text: dan/cli/baseline.py.
"""

from dan.cli import run_tool
from dan.cli.baseline import main

if __name__ == "__main__":
    run_tool(main)
