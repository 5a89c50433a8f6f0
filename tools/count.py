"""FLOPs and parameters of a network, layer by layer.

Usage:
    python tools/count.py resnet50                         # torchvision model (224x224)
    python tools/count.py timm.mixnet_s --alpha 4          # timm (pip install 'dan[timm]'), or my_pkg.nets:build
    python tools/count.py resnet18_small --arg width=16 --in-channels 1 --input-size 28
    python tools/count.py runs/demo/small.pt --input-size 28 --in-channels 1   # extracted network
    python tools/count.py runs/demo/checkpoints/last.pt    # every network of a training run
    python tools/count.py resnet50 --json                  # machine-readable
    python tools/count.py resnet50 --alpha 4               # big and small network of an adjoint conversion

FLOPs are multiply-accumulates of conv and linear layers (K, M, G = powers of 10); "nonzero"
counts parameters that are not exactly zero (r_beta masks make it differ).
"""

from dan.cli import run_tool
from dan.cli.count import main

if __name__ == "__main__":
    run_tool(main)
