"""The papers' comparisons in one table: every method, several seeds, results in docs/results.md.

Usage:
    python tools/reproduce.py --suite fashion-mnist --dry-run     # list the runs it would start
    python tools/reproduce.py --suite fashion-mnist               # run them (skips finished ones)
    python tools/reproduce.py --suite fashion-mnist --report-only # rewrite docs/results.md
    python tools/reproduce.py --suite cifar100 --data ~/data/cifar100 --download   # on a GPU machine
    python tools/reproduce.py --suite search --dry-run            # DAN vs uniform/random/greedy widths
    python tools/reproduce.py --suite search                      # -> docs/search.md

Runs per seed: standard, dropout, adjoint (alpha 2, 4, 8; alpha 4 with beta 0.5), KD into the
alpha-4 small network (teacher: the standard run), DAN search at the FLOPs of the alpha-4 small
network + adjoint retrain, ExpandNet of the alpha-4 small network, low-rank, KSANC. Each run is the
same train.py / search.py / retrain.py command a user would type; an interrupted suite continues
where it stopped (finished runs are skipped, a half-done run is resumed).

The search suite (dan/suite/search.py) asks whether DAN's widths beat uniform, random and greedy
widths at the same cost: FLOPs budgets of 10/25/50 % and a params budget of 25 %, 3 seeds, every
architecture retrained with the same recipe; then the ablations of the search. --no-ablations
leaves those out.
"""

from dan.cli import run_tool
from dan.cli.reproduce import main

if __name__ == "__main__":
    run_tool(main)
