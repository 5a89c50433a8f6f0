"""Fuzz the tools with corrupted inputs for longer than CI does (dan/fuzz.py; needs hypothesis).

Usage:
    python tools/fuzz.py --examples 2000               # split over the eight properties
    python tools/fuzz.py --examples 200 --case budget  # one property

Each example runs train.py / search.py / retrain.py in-process on a tiny synthetic task with a
corrupted arch.json, config, --set value or budget, and checks: exit 0, or exit 2 with exactly one
'error:' line; a finished run's folder unchanged. Prints one line per failing property (the
smallest failing example hypothesis found), the valid runs stopped at the time limit (for a reader
to judge that each was a legitimate long run, not a hang) and a summary line; exits 1 when any failed.
"""

from __future__ import annotations

import time

from dan.cli.common import Parser, positive_int
from dan.errors import UserError

PROG = "fuzz.py"  # the tool's name in usage and error lines (tools/fuzz.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = "interrupted: nothing to continue; run the command again"


def get_args_parser(prog: str = PROG):
    p = Parser(prog=prog, description=__doc__)
    p.add_argument("--examples", type=positive_int, default=400, help="examples in all (default 400)")
    p.add_argument("--case", action="append", help="arch_json, config, set, budget, widths, image_folder, tune_file or user_dataset (default: all)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    try:
        from hypothesis import HealthCheck, given, seed, settings, strategies as st
    except ImportError:
        raise UserError("tools/fuzz.py needs hypothesis: pip install -e '.[test]'")
    from dan import fuzz

    cases = args.case or sorted(fuzz.CASES)
    unknown = [c for c in cases if c not in fuzz.CASES]
    if unknown:
        raise UserError(f"unknown case '{unknown[0]}': choose from {', '.join(sorted(fuzz.CASES))}")
    per_case = max(1, args.examples // len(cases))
    capped = fuzz.cap_memory()
    if capped:
        print(f"fuzz: address space capped at {capped / 2**30:.1f} GiB (an oversized setting fails as an "
              "allocation, not by the kernel's out-of-memory killer)", flush=True)
    ws = fuzz.Workspace()
    failures, t0, ran, stopped = 0, time.time(), 0, 0
    try:
        for case in cases:
            count = {"n": 0}

            @seed(args.seed)
            @settings(max_examples=per_case, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(st.data())
            def prop(data):
                count["n"] += 1
                fuzz.CASES[case](ws, data)

            try:
                prop()
                print(f"{case}: {count['n']} examples, 0 failures", flush=True)
            except Exception as e:  # hypothesis re-raises the smallest failing example's error
                failures += 1
                first = " ".join(str(e).split())[:400]
                print(f"{case}: FAILED after {count['n']} examples: {type(e).__name__}: {first}", flush=True)
                for sub in getattr(e, "exceptions", ()):  # a flaky failure holds the first failure
                    print(f"  {type(sub).__name__}: {' '.join(str(sub).split())[:1500]}", flush=True)
            ran += count["n"]
            for what in fuzz.STOPPED[stopped:]:
                print(f"  stopped at the {fuzz.TIME_LIMIT:g} s limit (a valid run, training): {what[:300]}", flush=True)
            stopped = len(fuzz.STOPPED)
    finally:
        ws.close()
    print(f"fuzz: {ran} examples over {len(cases)} properties, {failures} failing properties, "
          f"{len(fuzz.STOPPED)} valid runs stopped at the {fuzz.TIME_LIMIT:g} s limit, {time.time() - t0:.0f} s")
    return 1 if failures else 0
