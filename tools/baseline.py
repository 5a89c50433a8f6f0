"""Width baselines at a search's budget -> arch.json (retrain it like a search's).

Usage:
    python tools/baseline.py uniform --config configs/fashion_mnist_suite.yaml --budget-flops 10% --out runs/u10
    python tools/baseline.py random  --config configs/fashion_mnist_suite.yaml --budget-flops 10% --seed 1 --out runs/r10
    python tools/baseline.py greedy  --supernet runs/<search>/checkpoints/last.pt --out runs/g10
    python tools/retrain.py runs/u10/arch.json

uniform: one width fraction for every group, cost closest to the budget. random: every group
draws a candidate width uniformly, redrawn until the cost is inside the band (seeded by --seed).
greedy: AutoSlim-style slimming of the trained supernet of a DAN search, narrowing the group
whose narrowing costs the least held-out cross-entropy per FLOP saved (the search's budget unless
--budget-* is given); far above the budget its moves are coarser (--coarse-above, --coarse-step).
Writes <out>/arch.json and <out>/config.yaml; refuses a folder that already holds an arch.json.
"""

from dan.cli import run_tool
from dan.cli.baseline import main

if __name__ == "__main__":
    run_tool(main)
