"""A latency-budget search against a FLOPs-budget search whose network has the same measured latency.

Usage:
    python tools/latency_compare.py                         # 3 seeds, the demo network -> docs/latency.md
    python tools/latency_compare.py --seeds 0 --search-epochs 1 --retrain-epochs 1 --out /tmp/lc --page /tmp/l.md

Per seed: (1) `tools/search.py --budget-latency B`; (2) `tools/search.py --budget-flops F` with F the
FLOPs of (1)'s network; its network and (1)'s are timed together, and if the FLOPs search's network is
more than --match off in latency, F is moved once along the latency model's elasticity (d log ms /
d log FLOPs of uniform-width networks near F) and (2) runs again; (3) both networks are retrained
with `tools/retrain.py` (same epochs and seed). At the end every final network is timed together,
and the comparison is written to docs/latency_search.json and into docs/latency.md (beside the
predictor of tools/latency.py). Resumable: a finished step (its arch.json or summary.json) is kept.
About 10 minutes per seed on 2 CPU cores with the defaults; run it on an otherwise idle machine
(latencies are measured).
"""

from dan.cli import run_tool
from dan.cli.latency_compare import main

if __name__ == "__main__":
    run_tool(main)
