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

from __future__ import annotations

import json
import os
import platform
import sys
import time

from dan.cli.common import Parser, positive_int

PROG = "bench.py"  # the tool's name in usage and error lines (tools/bench.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = "interrupted: nothing to continue; run the command again"

TARGET_STEP = 1.25
TARGET_SPEEDUP = 0.8  # best form / best form, batch 1 and 64 (issue 12; eager at batch 64 was 0.6)
TARGET_SEARCH = 2.0
PARTS = ["step", "inference", "memory", "search"]


def get_args_parser(prog: str = PROG):
    p = Parser(prog=prog, description=__doc__)
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--markdown", help="write a table to this Markdown file")
    p.add_argument("--rounds", type=positive_int, default=6)
    p.add_argument("--quick", action="store_true", help="ResNet-18 only, 3 rounds")
    p.add_argument("--only", action="append", choices=PARTS,
                   help="measure only this part (repeatable); the others are kept from --json's file")
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    import torch

    from dan import bench
    from dan.layers import cpu_has_avx512

    spaces = ["resnet18_small"] if args.quick else ["resnet18_small", "resnet50_small"]
    rounds = 3 if args.quick else args.rounds
    parts = args.only or PARTS
    res = {"step": [], "inference": [], "memory": [], "search": []}
    if args.only and args.json and os.path.isfile(args.json):
        with open(args.json) as f:
            res.update(json.load(f))
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    res.setdefault("dates", {})
    # the CPU steps' layout (bench.make_steps asks dan.layers.channels_last_safe, which for these
    # width-64 networks comes down to the CPU: NCHW without AVX-512)
    setting = {"width": 64, "image": 32, "batch": 64, "alpha": 4, "channels_last": cpu_has_avx512()}
    if args.only and "machine" in res:  # the page's header stays the other parts' machine; each
        res.setdefault("remeasured", {}).update({part: dict(machine, channels_last=setting["channels_last"])
                                                 for part in parts})  # part re-measured says its own
    else:
        res.update({"machine": machine, "setting": setting, "remeasured": {}})
    res["targets"] = {"adjoint_over_standard": TARGET_STEP, "speedup_over_flops_ratio": TARGET_SPEEDUP,
                      "search_over_standard": TARGET_SEARCH}
    for part in parts:
        res[part] = []
        res["dates"][part] = machine["date"]
    for space in spaces:
        if "step" in parts:
            print(f"[bench] step ratio {space}", file=sys.stderr)
            res["step"].append(bench.step_ratio(space, rounds=rounds, zeroed=(space == "resnet18_small")))
        if "inference" in parts:
            print(f"[bench] inference {space}", file=sys.stderr)
            res["inference"].append(bench.inference_speedup(space))
        if "memory" in parts:
            print(f"[bench] memory {space}", file=sys.stderr)
            mem = {"space": space}
            for kind in ("standard", "adjoint"):
                mem[f"{kind}_bytes"] = bench.peak_memory(space, kind)
                mem[f"{kind}_estimate_bytes"] = bench.estimate_memory(space, kind)
            mem["adjoint_over_standard"] = mem["adjoint_bytes"] / mem["standard_bytes"]
            res["memory"].append(mem)
    if "search" in parts:
        print("[bench] search step resnet18_small", file=sys.stderr)
        res["search"] = [bench.search_step_ratio("resnet18_small", rounds=rounds)]
    if torch.cuda.is_available():  # the GPU speed paths (mixed precision, channels-last, compile)
        print("[bench] GPU step times", file=sys.stderr)
        res["gpu"] = bench.gpu_step_times()
    text = json.dumps(res, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(res))
    print(text)
    return 0


def _ok(met: bool) -> str:
    return "met" if met else "**not met**"


def markdown(res: dict) -> str:
    """The page ``--markdown`` writes (docs/benchmarks.md) from the results ``main`` prints."""
    lines = _step_lines(res) + _inference_lines(res) + _memory_lines(res) + _search_lines(res) + _gpu_lines(res)
    return "\n".join(lines) + "\n"


def _step_lines(res: dict) -> list:
    m, s = res["machine"], res["setting"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (`python tools/bench.py`) on {m['date']}: {m['cpu']}, "
        f"{m['threads']} threads, PyTorch {m['torch']}. Small-image ResNets at width {s['width']}, "
        f"{s['image']}x{s['image']} inputs, batch {s['batch']}, alpha = {s['alpha']}, "
        f"{'channels-last' if s.get('channels_last', True) else 'NCHW (the trainer layout on a CPU without AVX-512)'}. "
        "Every number is a ratio of times measured in the same run (interleaved rounds, medians): the "
        "machine is shared and absolute times move from run to run.",
        "",
        "## Training step: adjoint / standard",
        "",
        "| network | standard step (s) | adjoint step (s) | adjoint / standard | target | zeroed-channel small path / standard |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["step"]:
        z = f"{r['zeroed_over_standard']:.2f}" if "zeroed_over_standard" in r else "-"
        lines.append(f"| {r['space']} | {r['standard_s']:.3f} | {r['adjoint_s']:.3f} | "
                     f"{r['adjoint_over_standard']:.2f} | <= {TARGET_STEP} ({_ok(r['adjoint_over_standard'] <= TARGET_STEP)}) | {z} |")
    return lines


def _inference_lines(res: dict) -> list:
    m = res["machine"]
    lines = []
    lines += ["", "The last column is the paper code's way of computing the small path (full width, "
              "channels beyond c/alpha zeroed), measured in the same run for reference.", "",
              "## Inference: extracted small network vs big network", "",
              f"Measured {res.get('dates', {}).get('inference', m['date'])}. Every network in deploy form (eval, BatchNorm "
              "folded into the convs) and in each runtime form of `dan/runtimes.py`: `eager` (channels-last, the "
              "form run summaries time), `eager_nchw`, `torchscript` (traced, frozen, optimize_for_inference), "
              "`onnxruntime` (the `small.onnx` export). Each form runs with 1 and with PyTorch's thread "
              "count (`@1t`, `@2t`: ONNX Runtime given the same, without busy-waiting); all forms of both networks "
              "at one thread count are timed in the same interleaved rounds (medians). **best runtime**: the form, "
              "the same for both networks (equal hardware), with the largest speed-up; target (issue 12): ≥ "
              f"{TARGET_SPEEDUP} × the FLOPs ratio at batch 1 and 64. **fastest forms**: each network in its own "
              "fastest form and thread count (the big one usually on both cores, the small one on one), the "
              "stricter reading, shown against the same number.", "",
              "| network | FLOPs ratio | batch | form | big (ms) | small (ms) | speed-up | speed-up / FLOPs ratio | target |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["inference"]:
        for b, v in r["batches"].items():
            for form, w in v.get("runtimes", {"eager": v}).items():
                lines.append(f"| {r['space']} | {r['flops_ratio']:.2f} | {b} | {form} | {w['big_ms']:.2f} | "
                             f"{w['small_ms']:.2f} | {w['speedup']:.2f} | {w['speedup_over_flops_ratio']:.2f} | |")
            if "best_runtime" in v:
                w = v["best_runtime"]
                lines.append(f"| {r['space']} | {r['flops_ratio']:.2f} | {b} | **best runtime** ({w['form']}, both "
                             f"networks) | {w['big_ms']:.2f} | {w['small_ms']:.2f} | {w['speedup']:.2f} | "
                             f"**{w['speedup_over_flops_ratio']:.2f}** | >= {TARGET_SPEEDUP} "
                             f"({_ok(w['speedup_over_flops_ratio'] >= TARGET_SPEEDUP)}) |")
            if "best" in v:
                w = v["best"]
                lines.append(f"| {r['space']} | {r['flops_ratio']:.2f} | {b} | **fastest forms** (big: {w['big']}, "
                             f"small: {w['small']}) | {w['big_ms']:.2f} | {w['small_ms']:.2f} | {w['speedup']:.2f} | "
                             f"**{w['speedup_over_flops_ratio']:.2f}** | {_ok(w['speedup_over_flops_ratio'] >= TARGET_SPEEDUP)} |")
    return lines


def _memory_lines(res: dict) -> list:
    lines = []
    lines += ["", "## Peak memory of a training step", "",
              _remeasured(res, "memory") +
              "Peak resident memory added by three steps, each kind in a fresh process; in brackets the "
              "least the memory check before a run (`dan/memory.py`) computes for the same step without "
              "allocating it (the bytes kept for the backward pass and Adam's state; it leaves out the "
              "gradients and the backward pass's transient buffers, so it must not exceed the measured peak).", "",
              "| network | standard (MB) | adjoint (MB) | adjoint / standard | estimate / measured |",
              "|---|---|---|---|---|"]
    for r in res["memory"]:
        est = [r.get(f"{k}_estimate_bytes") for k in ("standard", "adjoint")]
        shown = [f"{r[f'{k}_bytes'] / 2**20:.0f}" + (f" ({e / 2**20:.0f})" if e else "")
                 for k, e in zip(("standard", "adjoint"), est)]
        ratio = " / ".join(f"{e / r[f'{k}_bytes']:.2f}" for k, e in zip(("standard", "adjoint"), est) if e)
        lines.append(f"| {r['space']} | {shown[0]} | {shown[1]} | {r['adjoint_over_standard']:.2f} | "
                     f"{ratio or '-'} |")
    return lines


def _remeasured(res: dict, part: str) -> str:
    """The sentence for a part measured again on its own (``--only``), on another day or CPU than
    the page's header says."""
    m = res.get("remeasured", {}).get(part)
    if not m:
        return ""
    layout = "channels-last" if m["channels_last"] else "NCHW"
    return f"Measured again on its own on {m['date']} ({m['cpu']}, {m['threads']} threads, {layout}). "


def _search_lines(res: dict) -> list:
    lines = []
    lines += ["", "## DAN search step / standard step", "",
              "One search step = a weight step (default settings: every group's width drawn uniformly from its candidates, small path "
              "sliced to them) + an architecture step on a held-out batch (big network without gradients, "
              "small path with soft channel masks over 2 sampled candidates, gradients for the logits only). "
              "'start': uniform distribution (first architecture epoch); 'end': distribution peaked on an "
              f"architecture at the {res['search'][0]['budget']} FLOPs budget.", "",
              "| network | phase | standard step (s) | search step (s) | search / standard | target |",
              "|---|---|---|---|---|---|"]
    for r in res.get("search", []):
        for phase in ("start", "end"):
            v = r[phase]
            lines.append(f"| {r['space']} | {phase} | {v['standard_s']:.3f} | {v['search_s']:.3f} | "
                         f"{v['search_over_standard']:.2f} | <= {TARGET_SEARCH} ({_ok(v['search_over_standard'] <= TARGET_SEARCH)}) |")
    return lines


def _gpu_lines(res: dict) -> list:
    lines = []
    if res.get("gpu"):
        g = res["gpu"]
        lines += ["", f"## GPU training steps ({g['device']}, {g['space']}, batch {g['batch']})", "",
                  "| step | seconds | / standard fp32 |", "|---|---|---|"]
        for k, v in g["seconds"].items():
            lines.append(f"| {k} | {v:.4f} | {g['over_standard_fp32'][k]:.2f} |")
    else:
        lines += ["", "No GPU on this machine: the CUDA speed paths (mixed precision, channels-last, "
                  "torch.compile) are reported by the same command where one is present."]
    return lines
