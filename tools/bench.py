"""Benchmarks on this machine, as ratios measured in one run.

Usage:
    python tools/bench.py                                   # print JSON
    python tools/bench.py --json docs/benchmarks.json --markdown docs/benchmarks.md
    python tools/bench.py --quick                           # fewer rounds, ResNet-18 only
    python tools/bench.py --only inference --json docs/benchmarks.json --markdown docs/benchmarks.md
                                                            # re-measure one part, keep the others

Measures (small-image ResNets at width 64, 32x32 inputs, batch 64, alpha 4):
  * adjoint training step / standard training step (target <= 1.25), and the paper-code reference
    (small path at full width with zeroed channels, about 2.0);
  * inference speed-up of the extracted small network at batch 1 and 64 next to its FLOPs ratio, in
    every runtime form (eager channels-last / NCHW, TorchScript frozen, ONNX Runtime) and best form
    against best form (target: >= 0.8 x FLOPs ratio at batch 1 and 64);
  * peak memory added by a standard and by an adjoint step;
  * one DAN search step (weight step + architecture step) / one standard step (target <= 2.0), at
    the start of a search and near its end.
"""

from dan.cli import run_tool
from dan.cli.bench import main

if __name__ == "__main__":
    run_tool(main)
