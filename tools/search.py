"""DAN search: find the small network's widths under a FLOPs, params or latency budget -> arch.json.

Usage: python tools/search.py --help   (the same as: dan search --help)
The command's code and its full usage text: dan/cli/search.py.
"""

from dan.cli import run_tool
from dan.cli.search import main

if __name__ == "__main__":
    run_tool(main)
