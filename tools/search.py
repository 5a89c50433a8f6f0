"""DAN search: find the small network's widths under a FLOPs or params budget -> arch.json.

Usage:
    python tools/search.py --budget-flops 1.6G          # the paper's setting: configs/imagenet_resnet50.yaml
                                                        # (used when neither --config nor --dataset is given)
    python tools/search.py --config configs/fashion_mnist_resnet18.yaml --budget-flops 25%
    python tools/search.py --config configs/imagenet_resnet50.yaml --budget-flops 1.6G   # the paper's setting
    python tools/search.py --config ... --budget-params 1.8M --epochs 10
    python tools/search.py --config ... --out runs/s --resume        # continue an interrupted search

A budget is absolute (1.6G, 500M, 1.8M) or relative (25% of the small network at full width).
Writes runs/<name>/: arch.json (docs/arch-json.md), widths.png, config.yaml, TensorBoard events,
metrics.jsonl, checkpoints/last.pt. Then: python tools/retrain.py runs/<name>/arch.json
"""

from dan.cli import run_tool
from dan.cli.search import main

if __name__ == "__main__":
    run_tool(main)
