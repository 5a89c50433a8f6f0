"""Fuzz the tools with corrupted inputs for longer than CI does (dan/fuzz.py; needs hypothesis).

Usage: python tools/fuzz.py --help   (the same as: dan fuzz --help)
The command's code and its full usage text: dan/cli/fuzz.py.
"""

from dan.cli import run_tool
from dan.cli.fuzz import main

if __name__ == "__main__":
    run_tool(main)
