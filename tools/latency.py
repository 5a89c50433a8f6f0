"""Build and check the latency model of a search space on this device.

Usage:
    python tools/latency.py                                        # the demo network -> docs/latency.md
    python tools/latency.py --config configs/fashion_mnist_resnet18.yaml --threads 1 --samples 50
    python tools/latency.py --config C --no-cache --out /tmp/latency.md
    python tools/latency.py --arch runs/s/arch.json                # re-measure a latency-budget search's result

Measures every conv / linear layer of the space's small network at every pair of candidate widths,
fits the whole-network correction, then checks predicted against measured latency on --samples
architectures drawn from the space (--checks independent draws), with FLOPs as the baseline
predictor (dan/latency.py). The table is cached per device, runtime, threads, batch and PyTorch
version; the page and a JSON of every measured row are written.
"""

from dan.cli import run_tool
from dan.cli.latency import main

if __name__ == "__main__":
    run_tool(main)
