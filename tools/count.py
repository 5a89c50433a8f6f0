"""FLOPs and parameters of a network, layer by layer.

Usage: python tools/count.py --help   (the same as: dan count --help)
The command's code and its full usage text: dan/cli/count.py.
"""

from dan.cli import run_tool
from dan.cli.count import main

if __name__ == "__main__":
    run_tool(main)
