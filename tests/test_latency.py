"""Latency model: exact expectation, cache keys, hand-checked statistics, the tool's errors."""

import json
import os
import random

import pytest
import torch

import dan
from dan import latency
from dan.adjoint import extract_small
from dan.arch import build_adjoint, load_arch
from tests.conftest import needs_fashion
from tests.helpers import assert_user_error, run_tool
from tests.test_search import supernet


def test_spearman_by_hand():
    assert latency.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert latency.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5)
    assert latency.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)


def _fake_timer(monkeypatch):
    """Deterministic 'timings' so the algebra can be checked exactly: entry k takes 0.01·(1+k mod 7)."""
    def fake(fns, **kw):
        return [0.01 * (1 + k % 7) + 0.001 * k for k in range(len(fns))], 1.0
    monkeypatch.setattr(latency, "time_calls", fake)


def test_expected_latency_is_exact_on_one_hot_and_the_mean_over_architectures(monkeypatch, tmp_path):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _fake_timer(monkeypatch)
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=8)
    model = latency.build(sn, threads=1, cache=False, progress=False)
    assert model.layers and all(l.exact_out >= 0 for l in model.layers if l.kind == "conv")
    rng = random.Random(0)
    for _ in range(5):
        choice = [rng.randrange(len(c)) for c in sn.cands]
        one_hot = [torch.nn.functional.one_hot(torch.tensor(k), len(c)).double() for k, c in zip(choice, sn.cands)]
        assert float(model.expected(one_hot, sn.cand_tensors)) == pytest.approx(model.predict(sn.widths_of(choice)))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in sn.arch.logits:
            t.copy_(torch.randn(t.shape, generator=g))
    probs = [p.double() for p in sn.arch.probs()]
    # per memory format the expectation is exact: the mean over sampled architectures
    assert model.other is not None and {model.memory_format, model.other.memory_format} == {"channels_last",
                                                                                          "contiguous"}
    samples = [sn.widths_of([int(torch.multinomial(p, 1, generator=g)) for p in probs]) for _ in range(3000)]
    for m in (model, model.other):  # the fake timings' fit is arbitrary (near-zero totals): fix it
        m.w_lut, m.w_act, m.w_0 = 1.0, 1e-6, 0.1
        e = m.expected_own(probs, sn.cand_tensors)
        assert sum(map(m.predict_own, samples)) / len(samples) == pytest.approx(float(e.detach()), rel=0.02)
    # together: the faster format's prediction, and the smaller of the two expectations
    w = samples[0]
    assert model.predict(w) == min(model.predict_own(w), model.other.predict_own(w))
    e = model.expected(probs, sn.cand_tensors)
    assert float(e.detach()) == pytest.approx(min(float(model.expected_own(probs, sn.cand_tensors).detach()),
                                                  float(model.other.expected_own(probs, sn.cand_tensors).detach())))
    e.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in sn.arch.logits)
    again = latency.LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.predict(w) == model.predict(w) and again.other.memory_format == model.other.memory_format


def test_the_final_check_keeps_the_median_reading_and_retakes_slow_spells(monkeypatch, tmp_path):
    """A search's final check (and ``--arch``): three readings, the median kept; a reading taken while
    the reference ran > 10 % slower than at table time is retaken, at most ``repeats`` times."""
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _fake_timer(monkeypatch)
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    model = latency.build(sn, threads=1, cache=False, progress=False)
    choice = [0] * len(sn.cands)
    widest_ms = model.predict(sn.widths_of([len(c) - 1 for c in sn.cands]))
    level0 = model.reference_ms
    script = [(1.5, 0.9), (1.0, 0.6), (1.0, 0.4), (1.05, 0.5)]  # (reference level / table's, found ms)
    calls = []

    def fake_formats(sn_, choices, batch, **kw):
        assert choices == [choice, [len(c) - 1 for c in sn.cands]]
        lv, found = script[len(calls)]
        calls.append(lv)  # NCHW is the faster layout of the found network here, channels-last of the widest
        return {"channels_last": [found + 1.0, 1.0], "contiguous": [found, 1.5]}, lv * level0
    monkeypatch.setattr(latency, "measure_formats", fake_formats)
    r = latency.measure_found(sn, model, choice, relative=True, repeats=3)
    assert len(calls) == 4 and r["slow_readings_retaken"] == 1  # the slow first reading was retaken
    assert r["readings_ms"] == pytest.approx([0.4 * widest_ms, 0.5 * widest_ms, 0.6 * widest_ms])
    assert r["measured_ms"] == pytest.approx(0.5 * widest_ms) and r["memory_format"] == "contiguous"
    assert r["measured_raw_ms"] == 0.5 and r["machine_speed"] == pytest.approx(1 / 1.05)
    # an absolute budget reads the time at the tables' machine speed; a machine slow throughout is
    # retaken only ``repeats`` times, then read as it is
    calls.clear()
    script[:] = [(2.0, 0.5)] * 4
    r = latency.measure_found(sn, model, choice, relative=False, repeats=2)
    assert len(calls) == 4 and r["slow_readings_retaken"] == 2
    assert r["measured_ms"] == pytest.approx(0.25)


def test_timing_in_phases_holds_at_most_the_budget_and_scales_each_phase_to_one_level(monkeypatch):
    """VGG-11's table at 64 pixels took 22.8 GB when every entry was held at once; entries are now
    built, timed and freed phase by phase within a byte budget, each phase scaled to the median
    reference level."""
    alive, peak, phases = set(), [0], []

    class Entry:
        def __init__(self, k):
            self.k = k
            alive.add(k)
            peak[0] = max(peak[0], len(alive))

        def __del__(self):
            alive.discard(self.k)

    def fake(fns, reference=None, **kw):
        phases.append([f.k for f in fns])
        level = [1.0, 2.0, 4.0, 2.0][len(phases) - 1]
        return [float(f.k) * level for f in fns], level  # a phase at level L reads L times slower
    monkeypatch.setattr(latency, "time_calls", fake)
    sizes = [3, 3, 3, 9, 1, 1]
    ms, level = latency.time_bounded([lambda k=k: Entry(k) for k in range(6)], sizes, budget=6, reference=object())
    assert phases == [[0, 1], [2], [3], [4, 5]]  # the entry beyond the budget is a phase of its own
    assert peak[0] == 2 and level == 2.0  # the median of the phases' levels 1, 2, 4, 2
    assert ms == pytest.approx([2.0 * k for k in range(6)])  # every entry read at the median level
    phases.clear()
    ms, level = latency.time_bounded([lambda k=k: Entry(k) for k in range(6)], sizes, reference=object())
    assert phases == [list(range(6))] and level == 1.0  # within the default budget: one phase


def test_a_table_measured_in_phases_fills_every_entry(monkeypatch, tmp_path):
    calls = []
    real = latency.time_calls

    def counted(fns, **kw):
        calls.append(len(fns))
        return real(fns, **kw)
    monkeypatch.setattr(latency, "time_calls", counted)
    monkeypatch.setattr(latency, "PHASE_BYTES", 3_000_000)  # of about 9 MB: 3 or 4 phases
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    tables, level = latency.measure_tables(sn, rounds=1, inner=1, progress=False)
    assert len(calls) >= 3 and level > 0
    for fmt, layers in tables.items():
        assert all(v > 0 for l in layers for row in l.ms for v in row), fmt
    # a linear layer's entry is timed once and serves both memory formats
    linear = [k for k, l in enumerate(tables["channels_last"]) if l.kind == "linear"]
    assert linear and all(tables["channels_last"][k].ms == tables["contiguous"][k].ms for k in linear)


def test_tables_are_cached_per_device_threads_and_batch(monkeypatch, tmp_path):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    first = latency.build(sn, threads=1, progress=False, rounds=3)  # measured for real
    assert first.reference_ms > 0 and first.w_lut > 0
    assert all(v > 0 for l in first.layers for row in l.ms for v in row)

    def refuse(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(latency, "measure_tables", refuse)
    again = latency.build(sn, threads=1, progress=False)
    assert again.to_dict() == first.to_dict()
    with pytest.raises(AssertionError, match="measured again"):
        latency.build(sn, threads=2, progress=False)  # another thread count: another table
    with pytest.raises(AssertionError, match="measured again"):
        latency.build(sn, threads=1, batch=4, progress=False)
    # a table measured on a busy machine is measured again by a search once the machine is quiet
    # (an audit's busy table was cached and read a later budget on its slow scale); busy now, kept
    from dan import timing

    busy = latency.LatencyModel.from_dict({**first.to_dict(), "fit": {**first.fit, "timing_load": {
        "busy": True, "other_processes_cores": 1.7, "cpus": 2, "threads": 1}}})
    for name in os.listdir(latency.cache_dir()):  # the one table cached above, now a busy one
        with open(os.path.join(latency.cache_dir(), name), "w") as f:
            json.dump(busy.to_dict(), f)
    for quiet_now, measured in ((False, False), (True, True)):
        monkeypatch.setattr(timing.OtherLoad, "__exit__",
                            lambda self, *e, q=quiet_now: setattr(self, "busy", not q))
        if measured:
            with pytest.raises(AssertionError, match="measured again"):
                latency.build(sn, threads=1, progress=False, remeasure_busy=True)
        else:
            assert latency.build(sn, threads=1, progress=False, remeasure_busy=True).fit["timing_load"]["busy"]
    assert latency.build(sn, threads=1, progress=False).fit["timing_load"]["busy"]  # the default keeps it


def test_the_tool_refuses_bad_flags_in_one_line():
    assert_user_error(run_tool("latency.py", "--samples", "1"), "--samples")
    assert_user_error(run_tool("latency.py", "--arch", "arch.json", "--repeats", "0"), "--repeats")
    # the search's own settings are used: another runtime was ignored, its reading eager PyTorch's
    assert_user_error(run_tool("latency.py", "--arch", "arch.json", "--runtime", "onnxruntime"), "drop --runtime")


@needs_fashion
@pytest.mark.alone
def test_a_latency_budget_search_lands_and_holds_when_measured_again(tmp_path, monkeypatch):
    """The issue's command with --limit-batches: the found network's latency, measured again in a
    fresh process (relative to the widest small network timed alongside), is within 5 %. (On an
    AVX2-only AMD EPYC, 50 % was out of reach while every network was timed channels-last: the
    narrowest took 51 % of the widest's time; in its faster format, NCHW, it takes about 41 %.)"""
    monkeypatch.setenv("DAN_CACHE", str(tmp_path / "cache"))  # measured afresh, not an old table
    out = str(tmp_path / "s")
    proc = run_tool("search.py", "--config", "configs/fashion_mnist_resnet18.yaml", "--budget-latency", "50%",
                    "--epochs", "2", "--limit-batches", "5", "--out", out, "--quiet", "--no-tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    arch = json.load(open(os.path.join(out, "arch.json")))
    lat = arch["latency"]
    assert arch["budget"]["latency"] == pytest.approx(lat["budget_ms"]) and arch["budget"]["relative"] == 0.5
    assert lat["device"]["threads"] == 1 and lat["device"]["batch"] == 1
    assert lat["memory_format"] in ("channels_last", "contiguous")
    if lat["measured_repairs"] == 0:  # repair on the prediction alone; else on the measured correction
        assert abs(lat["predicted_ms"] / lat["budget_ms"] - 1) <= 0.03
    trials = lat["measured_trials"]  # every network the landing measured, the kept one among them
    assert len(trials) == lat["measured_repairs"] + 1 and lat["measured_ms"] in [t["measured_ms"] for t in trials]
    # the search's own final reading is one process's: it carries that process's bias (below) and
    # the load of the other test worker (a clean-clone run of the forty-second session read 1.058
    # here, under the two workers of `make test`; alone and beside test_search it passed 3 of 3)
    assert abs(lat["measured_over_budget"] - 1) <= 0.08
    # measured again in fresh processes: on this shared 2-core machine one process's thin/wide
    # ratio carries a bias of its own (medians of 3 in one process ranged 0.96-1.04 over 6 processes
    # for one network), so the check is the median over 3 fresh processes, each the median of 3
    # the third reading is of a copy whose config names a dataset function nobody trusted, not
    # importable here: the network is rebuilt from what the arch.json records (input shape,
    # classes), so a machine without the data (or its code) measures it too
    copy = dict(arch, config={**arch["config"], "data": {**arch["config"]["data"], "dataset": "absent_pkg.sets:make"}})
    os.makedirs(tmp_path / "copy")
    with open(tmp_path / "copy" / "arch.json", "w") as f:
        json.dump(copy, f)
    agains = []
    for path in (out, out, str(tmp_path / "copy")):
        again = run_tool("latency.py", "--arch", os.path.join(path, "arch.json"), fresh=True)
        assert again.returncode == 0, again.stderr[-3000:]
        agains.append(json.loads(again.stdout.strip().splitlines()[-1])["measured_over_budget"])
    # the target. (On the AVX2-only AMD EPYC of the seventh and eighth sessions, with every
    # network timed channels-last, fresh processes measured 0.93-0.96 of the budget for a network
    # the search had measured in band; each network in its faster format, 1.004-1.015.)
    assert abs(sorted(agains)[1] - 1) <= 0.05, (agains, lat["readings_ms"], lat["budget_ms"], lat["machine_speed"])
    # and retrain rebuilds it from the same arch.json
    net = extract_small(build_adjoint(load_arch(os.path.join(out, "arch.json"))))
    assert dan.count(net, tuple(arch["input_shape"])).flops == arch["small"]["flops"]


def test_a_latency_budget_outside_the_reachable_range_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path / "cache"))
    proc = run_tool("search.py", "--config", "configs/fashion_mnist_resnet18.yaml", "--dataset", "synthetic",
                    "--image-size", "12", "--num-classes", "10", "--set", "model.args.width=4",
                    "--budget-latency", "1us", "--out", str(tmp_path / "s"), "--quiet")
    assert_user_error(proc, "infeasible", "ms")
    assert not os.path.exists(tmp_path / "s")
    assert_user_error(run_tool("search.py", "--config", "configs/fashion_mnist_resnet18.yaml",
                               "--budget-latency", "fast", "--out", str(tmp_path / "t"), "--quiet"), "latency budget")


def test_the_page_is_written_from_its_json_files(tmp_path):
    """docs/latency.md from latency.json (+ latency_search.json, benchmarks.json when present)."""
    check = {"architectures": 50, "seed": 0, "spearman": 0.95, "spearman_flops": 0.8, "median_abs_rel_error": 0.02,
             "p90_abs_rel_error": 0.05, "median_abs_rel_error_raw": 0.03, "machine_speed": 0.99, "rows": []}
    pred = {"what": "net", "seconds": 12.0, "checks": [check],
            "model": {"entries": 10, "layers": 2, "w_lut": 1.1, "w_act": 0.0, "w_0": 0.1,
                      "fit": {"architectures": 18, "median_abs_rel_error": 0.01}, "device": {"threads": 1, "batch": 1}}}
    rows = [{"seed": s, "lat_ms": 1.0, "lat_flops": 2e6, "lat_top1": t, "flops_budget": 1.8e6, "flops_ms": 1.01,
             "flops_flops": 1.8e6, "flops_top1": u} for s, t, u in ((0, 0.90, 0.88), (1, 0.91, 0.885), (2, 0.905, 0.889))]
    compare = {"settings": {"config": "c.yaml", "budget": "50%", "batch": 1, "threads": 1, "search_epochs": 2,
                            "retrain_epochs": 2, "train_subset": 30000, "match": 0.03}, "seconds": 600, "rows": rows}
    bench = {"dates": {"inference": "2026-12-01"}, "machine": {"threads": 2}, "inference": [
        {"space": "resnet18_small", "flops_ratio": 8.0, "batches": {"1": {
            "runtimes": {"eager": {"speedup_over_flops_ratio": 0.5}, "onnxruntime": {"speedup_over_flops_ratio": 1.5}},
            "best": {"big": "eager", "small": "onnxruntime", "speedup_over_flops_ratio": 1.4},
            "best_runtime": {"form": "onnxruntime", "speedup_over_flops_ratio": 1.5}}}}]}
    for name, obj in (("latency.json", pred), ("latency_search.json", compare), ("benchmarks.json", bench)):
        (tmp_path / name).write_text(json.dumps(obj))
    latency.write_docs(str(tmp_path / "latency.md"))
    page = (tmp_path / "latency.md").read_text()
    assert "| 1 (seed 0) | 50 | 0.950 | 0.800 | 2.0 % | 5.0 % | 0.99 | 3.0 % | yes |" in page
    # top-1 90.50 ± 0.50 against 88.47 ± 0.45: +2.03, se sqrt((0.25 + 0.2033) / 3) = 0.39 -> supported
    assert "difference +2.03 (se 0.39): **supported**" in page
    assert "| resnet18_small | 8.00 | 1 | 0.50 | 1.50 | **1.50** (onnxruntime) | 1.40 (eager / onnxruntime) |" in page


def test_the_comparison_tool_refuses_bad_flags_in_one_line():
    assert_user_error(run_tool("latency_compare.py", "--match", "0.7"), "--match")


def test_an_onnxruntime_latency_model_is_measured_in_onnxruntime(monkeypatch, tmp_path):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    calls = []
    real = latency.runnable

    def spy(net, shape, runtime="torch", threads=None, *rest):
        calls.append(runtime)
        return real(net, shape, runtime, threads, *rest)
    monkeypatch.setattr(latency, "runnable", spy)
    model = latency.build(sn, threads=1, runtime="onnxruntime", progress=False, rounds=3)
    assert model.device["runtime"] == "onnxruntime" and set(calls) == {"onnxruntime"}
    assert model.reference_ms > 0 and all(v > 0 for l in model.layers for row in l.ms for v in row)
    (found,), level = latency.measure_networks(sn, [[0] * len(sn.cands)], 1, runtime="onnxruntime", threads=1,
                                               rounds=3)
    assert found > 0 and level > 0


def test_layers_with_same_padding_are_timed_at_the_size_they_convolve():
    """timm's Conv2dSame pads inside its forward: each layer rebuilt for the latency tables (padding
    as recorded) must make the output size the network makes."""
    from test_coverage import SameNet

    from dan.adjoint import to_adjoint
    from dan.latency import geometry
    from dan.supernet import Supernet

    shape = (1, 3, 12, 12)
    sn = Supernet(to_adjoint(SameNet(), alpha=1, input_shape=shape), (0.5, 1.0), shape)
    geo = {g["name"]: g for g in geometry(sn) if g["kind"] == "conv"}
    assert geo["down"]["in_hw"] == [13, 13] and geo["down"]["padding"] == [0, 0]  # one pixel after
    for g in geo.values():
        conv = torch.nn.Conv2d(1, 1, g["kernel"], g["stride"], g["padding"], g["dilation"])
        assert conv(torch.zeros(1, 1, *g["in_hw"])).shape[2:].numel() == g["hw"], g["name"]


def test_a_latency_table_measured_on_a_busy_machine_or_fitted_poorly_is_named():
    # an audit's table, built while other jobs used 1.7 of 2 CPUs, was cached and read a later
    # absolute budget on its slow scale without a word
    from dan.latency import LatencyModel, table_note

    quiet = LatencyModel([], fit={"median_abs_rel_error": 0.014, "timing_load": {"busy": False}})
    assert table_note(quiet) is None
    busy = LatencyModel([], fit={"median_abs_rel_error": 0.16, "timing_load": {
        "busy": True, "other_processes_cores": 1.7, "cpus": 2, "threads": 1}})
    note = table_note(busy)
    assert "other processes used 1.7 of the 2 CPUs" in note and "median error 16 %" in note and "delete it" in note
    # fitted poorly on a quiet machine: measuring again on a quiet machine gives the same (an audit was sent to)
    poor = LatencyModel([], fit={"median_abs_rel_error": 0.41, "timing_load": {"busy": False}})
    note = table_note(poor)
    assert "median error 41 %" in note and "quiet machine" not in note and "tools/latency.py --arch" in note


def test_the_least_predicted_latency_is_searched_beyond_the_narrowest_network():
    # latency is not monotone in width: a budget under the narrowest network's time was refused
    # while the search had found a faster network
    from types import SimpleNamespace

    from dan.search import least_latency

    cands = [[2, 4, 6, 8], [2, 4, 6, 8]]
    sn = SimpleNamespace(cands=cands, extreme_choices=lambda: [[0, 0], [3, 3]],
                         widths_of=lambda c: [cands[g][k] for g, k in enumerate(c)])
    # the first group runs fastest at 4 channels (a kernel's sweet spot), the second grows with width
    model = SimpleNamespace(predict=lambda w: {2: 1.0, 4: 0.6, 6: 0.9, 8: 1.2}[w[0]] + 0.1 * w[1])
    assert model.predict([2, 2]) == pytest.approx(1.2)
    assert least_latency(model, sn) == pytest.approx(0.8)


def test_the_latency_page_of_another_network_or_setting_does_not_go_over_the_projects_page():
    # an audit's `latency.py --model torchvision.mobilenet_v2 ...` rewrote docs/latency.md, its JSON
    # and figure (about 2000 lines of measured rows)
    from dan.cli.latency import get_args_parser, page_path

    def where(*argv):
        return page_path(get_args_parser().parse_args(list(argv)))

    assert where() == os.path.join("docs", "latency.md") and where("--samples", "10") == where()
    assert where("--config", "./configs/fashion_mnist_resnet18.yaml") == where()
    assert where("--model", "torchvision.mobilenet_v2") == os.path.join("runs", "latency-torchvision.mobilenet_v2",
                                                                      "latency.md")
    assert where("--config", "configs/cifar10_resnet18.yaml").startswith(os.path.join("runs", "latency-cifar10_resnet18-"))
    # (a review: the last name component alone made two networks, or two settings, share a folder)
    pages = [where(*other) for other in ([], ["--set", "data.image_size=32"], ["--set", "data.image_size=64"],
                                          ["--batch", "8"], ["--threads", "2"], ["--runtime", "onnxruntime"],
                                          ["--model", "my_pkg.nets:build"], ["--model", "timm.mobilenet_v2"],
                                          ["--model", "torchvision.mobilenet_v2"])]
    assert len(set(pages)) == len(pages) and all(p.startswith("runs" + os.sep) for p in pages[1:])
    assert get_args_parser().parse_args(["--out", "x.md"]).out == "x.md"


def test_a_broken_evaluation_image_is_refused_before_the_latency_tables_are_measured(tmp_path, monkeypatch):
    # a ResNet-50 at 224 px measured its tables for 15 minutes, then refused a garbage image in val/
    # that a FLOPs-budget search refuses within seconds
    import sys

    from dan.search import Searcher
    from tests.helpers import tiny_config
    from tests.test_data import write_image_folder

    root = write_image_folder(tmp_path / "imgs")
    with open(os.path.join(root, "val", "cat", "0.png"), "wb") as f:
        f.write(b"not an image")
    monkeypatch.setattr(sys.modules["dan.search"], "latency_model",
                        lambda *a, **k: pytest.fail("the tables were measured first"))
    cfg = tiny_config(str(tmp_path / "s"), **{"data.dataset": "imagefolder", "data.data": root,
                                              "data.num_classes": None, "search.budget_latency": "50%"})
    with pytest.raises(dan.UserError, match="cannot read image .*0.png"):
        Searcher(cfg)


def _interrupted_after(phases: int, real, timed: list):
    """``time_calls`` that times ``phases`` phases (their sizes appended to ``timed``), then is interrupted."""
    def time_calls(fns, **kw):
        if len(timed) == phases:
            raise KeyboardInterrupt
        timed.append(len(fns))
        return real(fns, **kw)
    return time_calls


def test_an_interrupted_table_keeps_its_finished_phases_and_the_next_build_takes_them_up(monkeypatch, tmp_path):
    # a ResNet-50's table at 224 px, interrupted after minutes, kept nothing, and Ctrl-C's line said
    # "interrupted before the first epoch ended"; the build is announced, and one bar counts every phase
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    monkeypatch.setattr(latency, "PHASE_BYTES", 3_000_000)  # 3 or 4 phases of tables
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    real, timed = latency.time_calls, []

    monkeypatch.setattr(latency, "time_calls", _interrupted_after(2, real, timed))
    said = []
    with pytest.raises(KeyboardInterrupt, match="latency model was measured: its 2 finished phase\\(s\\) are kept in"):
        latency.build(sn, threads=1, progress=False, rounds=1, say=said.append)
    assert len(said) == 1 and said[0].startswith("measuring this CPU's latency model") and str(tmp_path) in said[0]
    kept = sorted(os.listdir(latency.cache_dir()))
    assert len(kept) == 2 and all(".tables." in k for k in kept)
    timed.clear()
    monkeypatch.setattr(latency, "time_calls", lambda fns, **kw: timed.append(len(fns)) or real(fns, **kw))
    model = latency.build(sn, threads=1, progress=False, rounds=1)
    assert all(v > 0 for l in model.layers for row in l.ms for v in row)
    assert os.listdir(latency.cache_dir()) == [f"{latency._key(model.device, sn)}.json"]  # the phases removed
    taken_up = list(timed)
    timed.clear()
    latency.build(sn, threads=1, progress=False, rounds=1, cache=False)  # every phase timed
    assert len(timed) >= 4 and taken_up == timed[2:]  # the two kept were not timed again


def test_a_kept_phase_keeps_its_busy_reading_and_is_taken_up_only_if_timed_alike(monkeypatch, tmp_path):
    # a review: a table built partly on a busy machine (a phase kept from an interrupted build) read as
    # quiet, and a phase timed with other rounds was taken up as it was
    from dan import timing

    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    monkeypatch.setattr(latency, "PHASE_BYTES", 3_000_000)
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    real, timed = latency.time_calls, []


    class Busy(timing.OtherLoad):  # the first phase's machine: busy
        def __exit__(self, *exc):
            self.cores, self.busy = 1.5, True

    monkeypatch.setattr(latency, "OtherLoad", Busy)
    monkeypatch.setattr(latency, "time_calls", _interrupted_after(1, real, timed))
    with pytest.raises(KeyboardInterrupt):
        latency.build(sn, threads=1, progress=False, rounds=1)
    [kept] = os.listdir(latency.cache_dir())
    monkeypatch.setattr(latency, "OtherLoad", timing.OtherLoad)
    monkeypatch.setattr(timing.OtherLoad, "__exit__", lambda self, *exc: setattr(self, "busy", False) or
                        setattr(self, "cores", 0.0))  # the rest on a quiet machine
    path = os.path.join(latency.cache_dir(), kept)
    entries = json.load(open(path))["entries"]
    assert latency._kept_phase(path, entries, {"rounds": 1, "inner": 3}) is not None
    assert latency._kept_phase(path, entries, {"rounds": 2, "inner": 3}) is None  # timed again with 2
    timed.clear()
    monkeypatch.setattr(latency, "time_calls", lambda fns, **kw: timed.append(len(fns)) or real(fns, **kw))
    model = latency.build(sn, threads=1, progress=False, rounds=1)  # takes the kept busy phase up
    load = model.fit["timing_load"]
    assert load["busy"] is True and load["other_processes_cores"] == 1.5
    assert "other processes used 1.5 of the" in latency.table_note(model)
    assert kept not in os.listdir(latency.cache_dir())


def test_a_budget_under_the_measured_narrowest_network_is_infeasible_whatever_the_fit_predicts():
    # an ONNX Runtime fit with a large negative intercept predicted a RegNet's narrowest network at a
    # seventh of its measured time: a 5 % budget was taken, and the search ended at 207 % of it
    from types import SimpleNamespace

    from dan.search import latency_floor

    fit = SimpleNamespace(fit={"extremes_ms": [0.15, 1.5]})  # measured: the narrowest at 10 % of the widest
    assert latency_floor(fit, 0.0066, 0.0066, 1.5) == pytest.approx(0.15)
    assert latency_floor(fit, 0.02, 0.01, 1.5) == pytest.approx(0.075)  # the least's margin below the narrowest kept
    assert latency_floor(fit, -0.3, -0.4, 1.5) == pytest.approx(0.15)  # a negative prediction
    assert latency_floor(fit, 0.02, -0.01, 1.5) == pytest.approx(0.15)  # the least at or under zero (a review)
    assert latency_floor(fit, 0.001, 0.0, 1.5) == pytest.approx(0.15)
    assert latency_floor(fit, 0.2, 0.18, 1.5) == pytest.approx(0.18)  # predicted above the measured: as predicted
    assert latency_floor(fit, 0.0066, 0.0066, 3.0) == pytest.approx(0.3)  # on the predicted widest's scale
    # the fit's scale off: the measured narrowest above the predicted widest, never above the widest
    assert latency_floor(SimpleNamespace(fit={"extremes_ms": [2.0, 1.0]}), 0.001, 0.001, 0.5) == pytest.approx(0.5)
    assert latency_floor(SimpleNamespace(fit={}), 0.0066, 0.005, 1.5) == pytest.approx(0.005)  # an older table


def test_a_search_refuses_a_latency_budget_under_the_measured_floor(monkeypatch):
    from types import SimpleNamespace

    from dan.budget import resolve_budget
    from dan.config import SearchConfig
    from dan.search import latency_model

    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    narrow, wide = (sum(sn.widths_of(c)) for c in sn.extreme_choices())
    # a fit with a large negative intercept: the narrowest predicted at a hundredth of the widest, which
    # the calibration measured at 30 % of the widest's time
    model = SimpleNamespace(predict=lambda w: 1.0 * (sum(w) - narrow) / (wide - narrow) + 0.01,
                            fit={"extremes_ms": [0.3, 1.0]})
    monkeypatch.setattr(latency, "build", lambda *a, **k: model)
    extremes = sn.extremes()
    latency_model(SearchConfig(budget_latency="10%"), sn, extremes, False)
    assert extremes["latency"] == pytest.approx((0.3 * 1.01, 1.01))  # on the predicted widest's scale
    for budget in ("10%", "0.2ms"):  # as predicted both were feasible (the narrowest at 1 %)
        with pytest.raises(dan.UserError, match="infeasible.*ranges from 0.303 ms"):
            resolve_budget(SearchConfig(budget_latency=budget), extremes, "the test network")
    assert resolve_budget(SearchConfig(budget_latency="40%"), extremes, "the test network").value == \
        pytest.approx(0.404)


def test_a_table_records_its_measured_extremes_and_an_interrupt_says_what_was_kept(monkeypatch, tmp_path):
    # an audit's Ctrl-C in a one-phase table was told "its finished phases are kept": none was
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _fake_timer(monkeypatch)
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    model = latency.build(sn, threads=1, progress=False, cache=False)
    assert len(model.fit["extremes_ms"]) == 2 and all(v > 0 for v in model.fit["extremes_ms"])

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(latency, "time_calls", interrupt)
    with pytest.raises(KeyboardInterrupt, match="before any of it could be kept: run the same call again"):
        latency.build(sn, threads=1, progress=False)
    assert not os.listdir(latency.cache_dir())


def test_an_onnxruntime_table_is_keyed_by_its_version():
    # an audit: an ONNX Runtime upgrade would have kept using the old version's table
    pytest.importorskip("onnxruntime")
    import onnxruntime

    assert latency.device_description(1, 1, "onnxruntime")["onnxruntime"] == onnxruntime.__version__
    assert "onnxruntime" not in latency.device_description(1, 1, "torch")


def test_the_comparison_runs_under_onnxruntime_and_its_flops_search_takes_no_latency_key(tmp_path, monkeypatch):
    """An audit: latency_compare had no runtime flag, and a config's search.latency_runtime:
    onnxruntime stopped it at its FLOPs search ("this search has no latency budget"). Every search
    command it gives is resolved here as tools/search.py resolves it; searches, timings and
    retrains are stand-ins."""
    from types import SimpleNamespace

    import dan.arch
    from dan.cli import latency_compare as lc
    from dan.cli import search as search_cli
    from dan.cli.common import resolve_config
    from tests.helpers import ROOT

    import yaml

    config = tmp_path / "c.yaml"
    d = yaml.safe_load(open(os.path.join(ROOT, "configs", "fashion_mnist_resnet18.yaml")))
    d["search"] = {**d.get("search", {}), "latency_runtime": "onnxruntime", "latency_threads": 1}
    config.write_text(yaml.safe_dump(d))  # (a second search: section is refused as a duplicate key)
    searches, timed = [], []

    def run(command, *args):  # the search's own checks, before its first epoch
        cfg = resolve_config(search_cli.get_args_parser().parse_args(list(args)), search_cli.EXTRA)
        searches.append(cfg.resolve("search").search)

    runtime = ["onnxruntime"]  # what the kept latency search measured in
    fake = lambda path: SimpleNamespace(latency={"device": {"batch": 1, "threads": 1, "runtime": runtime[0]}},
                                        small={"flops": 1838328})
    monkeypatch.setattr(lc, "_run", run)
    monkeypatch.setattr(lc, "_retrain", lambda *a: 0.9)
    monkeypatch.setattr(dan.arch, "load_arch", fake)
    monkeypatch.setattr(latency, "measure_archs", lambda archs, **kw: timed.append(kw["runtime"]) or [1.0] * len(archs))
    page = str(tmp_path / "l.md")
    common = ["--seeds", "0", "--out", str(tmp_path / "lc"), "--page", page]
    for flag in ([], ["--latency-runtime", "onnxruntime"]):  # the config's runtime, then the flag's
        searches.clear()
        assert lc.main(["--config", str(config), *flag, *common]) == 0
        lat, flops = searches
        assert lat.budget_latency == "50%" and lat.latency_runtime == "onnxruntime"
        assert flops.budget_latency is None and flops.latency_runtime == "torch" and flops.budget_flops == 1838328
    assert set(timed) == {"onnxruntime"}
    assert json.load(open(str(tmp_path / "l_search.json")))["settings"]["runtime"] == "onnxruntime"
    # the flag on a config without one: the latency search measures in ONNX Runtime
    lat_args, flops_args, rt = lc._budget_args(os.path.join(ROOT, "configs", "fashion_mnist_resnet18.yaml"),
                                               "40%", "onnxruntime")
    assert lat_args == ["--budget-latency", "40%", "--latency-runtime", "onnxruntime"] and flops_args == []
    assert rt == "onnxruntime"
    # a kept latency search of another runtime is not compared as this one's
    runtime[0] = "torch"
    with pytest.raises(dan.UserError, match="searched with latencies in torch, this comparison's are in onnxruntime"):
        lc.main(["--config", str(config), *common])


def test_a_failed_step_of_the_comparison_says_error_once(monkeypatch):
    import subprocess

    from dan.cli import latency_compare as lc

    done = subprocess.CompletedProcess([], 2, "", "a warning\nerror: search.band must be in (0.001, 0.5]: fix it\n")
    monkeypatch.setattr(lc.subprocess, "run", lambda *a, **kw: done)
    with pytest.raises(dan.UserError) as e:
        lc._run("search", "--band", "0.9")
    # run_tool puts the one "error: " before it (an audit read "... failed: error: search.latency_runtime ...")
    assert str(e.value) == "dan search --band 0.9 failed: search.band must be in (0.001, 0.5]: fix it"


def test_an_onnxruntime_page_names_onnx_runtime_and_the_network_measured(tmp_path):
    """An audit: an onnxruntime table's page said "(eager PyTorch 2.14.1+cu130, ...)", and a
    --model torchvision.* page named configs/fashion_mnist_resnet18.yaml beside the network."""
    from argparse import Namespace

    from dan.cli.latency import network_words

    device = {"cpu": "cpu", "machine": "x86_64", "runtime": "onnxruntime", "threads": 1, "batch": 1, "torch": "2.9",
              "onnxruntime": "1.23.0"}  # (dan.latency.device_description records the runtime's version)
    model = {"entries": 10, "layers": 2, "w_lut": 1.1, "w_act": 0.0, "w_0": 0.1, "device": device,
             "fit": {"architectures": 18, "median_abs_rel_error": 0.01}}
    args = Namespace(space="torchvision.mobilenet_v2", config="configs/f.yaml", set=["data.image_size=32"])
    what = network_words("torchvision.mobilenet_v2", args, (1, 3, 32, 32))
    assert what == ("torchvision.mobilenet_v2 (--model torchvision.mobilenet_v2, --set data.image_size=32; the data "
                    "settings of `configs/f.yaml`), input 3x32x32")
    pred = {"what": what, "seconds": 12.0, "checks": [], "model": model}
    compare = {"settings": {"config": "c.yaml", "budget": "50%", "batch": 1, "threads": 1, "runtime": "onnxruntime",
                            "search_epochs": 2, "retrain_epochs": 2, "train_subset": 30000, "match": 0.03},
               "seconds": 600, "rows": [{"seed": 0, "lat_ms": 1.0, "lat_flops": 2e6, "lat_top1": 0.9, "flops_ms": 1.0,
                                         "flops_budget": 1.8e6, "flops_flops": 1.8e6, "flops_top1": 0.88}]}
    text = "\n".join(latency.page_lines(pred, compare))
    assert "runtime `onnxruntime` (ONNX Runtime 1.23.0 on networks exported from PyTorch 2.9, deploy form" in text
    assert "eager PyTorch" not in text and "(batch 1, 1 thread, ONNX Runtime)" in text
    assert "Network: torchvision.mobilenet_v2 (--model" in text
    eager = {**pred, "model": {**model, "device": {**device, "runtime": "torch"}}}
    assert "runtime `torch` (eager PyTorch 2.9, deploy form" in "\n".join(latency.page_lines(eager))


def test_an_older_record_without_the_onnxruntime_version_is_this_machine():
    # a review: `latency.py --arch` called an older ONNX Runtime search's machine another one
    dev = latency.device_description(1, 1, "onnxruntime")
    older = {k: v for k, v in dev.items() if k != "onnxruntime"}
    assert latency._same_device(older) and latency._same_device(dev)
    assert not latency._same_device({**dev, "cpu": "another CPU"})


def test_the_measured_landing_does_not_measure_a_network_again(monkeypatch):
    """Repair on the corrected costs can come back to a network already measured (no candidate
    reaches the corrected band, or it went back): measuring it again gave another noisy reading of
    the same network, of which the one nearer the budget was kept (an audit's RegNet landing read
    one network at 0.962, then 0.901). The landing stops there instead."""
    from types import SimpleNamespace

    from dan import search_result

    costs = [30.0, 40.0, 50.0]  # one group, three widths: nothing lands between them
    cost = SimpleNamespace(of=lambda ch: costs[ch[0]])
    budget = SimpleNamespace(value=40.0, band=0.03, lo=38.8, hi=41.2, relative=0.5)
    searcher = SimpleNamespace(budget=budget, sn=SimpleNamespace(cands=[[0, 1, 2]]), cost=cost)
    calls = []

    def measured(_, choice):
        calls.append(list(choice))
        m = cost.of(choice) * 1.1  # 110 %: the corrected band (36.4 predicted) holds no network
        return {"predicted_ms": cost.of(choice), "measured_ms": m, "measured_over_budget": m / 40.0,
                "in_band": False}

    monkeypatch.setattr(search_result, "measured_latency", measured)
    choice, lat = search_result.land_measured(searcher, [1], [[0.0, 0.0, 0.0]])
    assert calls == [[1]] and choice == [1]  # measured once, kept (no other network is nearer)
    assert lat["measured_repairs"] == 0 and len(lat["measured_trials"]) == 1


def test_an_arch_json_s_latency_batch_and_threads_are_checked_before_it_is_timed(tmp_path, monkeypatch):
    """Audit: ``remeasure`` took ``latency.device.batch`` and ``threads`` from a given arch.json
    unchecked (batch 50,000,000 asked 146 GB). The batch is refused in one line before anything is
    built; threads above this machine's CPUs are taken down to them, with a note."""
    base = tmp_path / "b"
    p = run_tool("baseline.py", "uniform", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                 "--set", "model.args.width=8", "--budget-flops", "40%", "--quiet", "--out", str(base))
    assert p.returncode == 0, p.stderr[-2000:]
    arch = json.loads((base / "arch.json").read_text())
    arch["budget"] = {"latency": 1.0, "relative": None, "band": 0.03}
    arch["widths"].update({g: c[-1] for g, c in arch["candidates"].items()})  # a search's: candidates
    built = []

    class Built(Exception):
        pass

    def build(sn, **kw):
        built.append(kw)
        raise Built

    monkeypatch.setattr(latency, "build", build)
    device = latency.device_description(1, 1)
    for bad in ({"batch": 50_000_000}, {"batch": 0}, {"batch": "1"}, {"threads": 0}, {"threads": 1.5},
                {"runtime": "tensorrt"}):
        arch["latency"] = {"device": {**device, **bad}}
        (base / "arch.json").write_text(json.dumps(arch))
        with pytest.raises(dan.UserError, match=rf"latency\.device\.{next(iter(bad))} must be .*: fix the file"):
            latency.remeasure(str(base))
        assert not built
    cpus = len(os.sched_getaffinity(0))
    arch["latency"] = {"device": {**device, "threads": 1_000_000}}
    (base / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(Built):
        latency.remeasure(str(base))
    assert built[-1]["threads"] == cpus and built[-1]["batch"] == 1
    assert latency.recorded_device({**device, "threads": 1_000_000})[3] == (
        f"note: the search timed with 1000000 threads, more than the {cpus} CPUs this process may use: timed with "
        f"{cpus}")
    assert latency.recorded_device(device) == (1, 1, "torch", None)


def test_a_cache_entry_nesting_its_other_model_deeply_is_measured_again(monkeypatch, tmp_path):
    """Audit: a cache entry (read from DAN_CACHE) whose ``other`` nested thousands of times deep was a
    RecursionError traceback (``json.load``, then ``LatencyModel.from_dict``). It is a damaged entry,
    measured again as the others are; ``other`` nests once."""
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    path, model = latency.cached(sn, threads=1)
    assert model is None

    def refuse(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(latency, "measure_tables", refuse)
    os.makedirs(os.path.dirname(path))
    for depth in (100_000, 950, 2):
        with open(path, "w") as f:
            f.write('{"layers": [], "other": ' * depth + '{"layers": []}' + "}" * depth)
        assert latency.cached(sn, threads=1) == (path, None)
        with pytest.raises(AssertionError, match="measured again"):
            latency.build(sn, threads=1, progress=False)
    inner = latency.LatencyModel([], memory_format="contiguous")
    two = latency.LatencyModel.from_dict(latency.LatencyModel([], other=inner).to_dict())  # as build writes it
    assert two.other == inner and two.other.other is None
