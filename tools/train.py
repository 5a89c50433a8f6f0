"""Train a network with one of the engine's methods and extract the deployable network.

Usage: python tools/train.py --help   (the same as: dan train --help)
The command's code and its full usage text: dan/cli/train.py.
"""

from dan.cli import run_tool
from dan.cli.train import main

if __name__ == "__main__":
    run_tool(main)
