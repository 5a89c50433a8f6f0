"""Which models the adjoint conversion handles: the torchvision zoo and a fixed timm list.

Usage: python tools/coverage.py --help   (the same as: dan coverage --help)
The command's code and its full usage text: dan/cli/coverage.py.
"""

from dan.cli import run_tool
from dan.cli.coverage import main

if __name__ == "__main__":
    run_tool(main)
