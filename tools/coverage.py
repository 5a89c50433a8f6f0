"""Which models the adjoint conversion handles: the torchvision zoo and a fixed timm list.

Usage:
    python tools/coverage.py                          # torchvision + timm (if installed) -> docs/coverage.md
    python tools/coverage.py --source torchvision     # one zoo
    python tools/coverage.py --model densenet121 --model mobilenet_v2 --out /tmp/c.md

Each model: convert (alpha 4) -> one adjoint training step -> extract -> the extracted network
equals the small path (eval, relative error <= 1e-4) -> FLOPs and params counted (dan/coverage.py).
Prints one line per model; writes the page (default docs/coverage.md) and a JSON of the rows
next to it. The whole torchvision zoo takes tens of minutes on 2 CPU cores (its largest RegNets
and ViTs dominate).
"""

from dan.cli import run_tool
from dan.cli.coverage import main

if __name__ == "__main__":
    run_tool(main)
