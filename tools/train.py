"""Train a network with one of the engine's methods and extract the deployable network.

Usage:
    python tools/train.py --config configs/fashion_mnist_resnet18.yaml --method adjoint --alpha 4
    python tools/train.py --config configs/fashion_mnist_resnet18.yaml --method standard --epochs 5
    python tools/train.py --dataset synthetic --epochs 1 --limit-batches 5 --out runs/smoke
    python tools/train.py --config ... --out runs/x --resume      # continue an interrupted run

Writes runs/<name>/: config.yaml, TensorBoard events, metrics.jsonl, checkpoints/{last,best}.pt,
small.pt (TorchScript; model.pt when the method deploys the base network itself), small.pt2
(torch.export), small_state.pt, summary.json; prints a summary
table (top-1, FLOPs, params, latency of the big and the deployable network).
"""

from dan.cli import run_tool
from dan.cli.train import main

if __name__ == "__main__":
    run_tool(main)
