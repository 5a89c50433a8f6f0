"""The papers' comparisons in one table: every method, several seeds, results in docs/results.md.

Usage: python tools/reproduce.py --help   (the same as: dan reproduce --help)
The command's code and its full usage text: dan/cli/reproduce.py.
"""

from dan.cli import run_tool
from dan.cli.reproduce import main

if __name__ == "__main__":
    run_tool(main)
