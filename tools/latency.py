"""Build and check the latency model of a search space on this device.

Usage: python tools/latency.py --help   (the same as: dan latency --help)
The command's code and its full usage text: dan/cli/latency.py.
"""

from dan.cli import run_tool
from dan.cli.latency import main

if __name__ == "__main__":
    run_tool(main)
