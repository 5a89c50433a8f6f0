"""A latency-budget search against a FLOPs-budget search whose network has the same measured latency.

Usage: python tools/latency_compare.py --help   (the same as: dan latency_compare --help)
The command's code and its full usage text: dan/cli/latency_compare.py.
"""

from dan.cli import run_tool
from dan.cli.latency_compare import main

if __name__ == "__main__":
    run_tool(main)
