"""Issue 9: the bare search command, refused searches leave nothing, convergence statistics, the
search suite's plan and report."""

import json
import math
import os

import pytest

import dan
from dan.monitor import Monitor
from dan.search import search
from tests.helpers import assert_user_error, run_tool, tiny_config


def test_bare_search_command_names_the_model_and_what_to_type(tmp_path):
    """`python tools/search.py --budget-flops 1.6G` with no ImageNet folder: one line naming the
    paper's model, its FLOPs range and both commands; no run folder anywhere."""
    p = run_tool("search.py", "--budget-flops", "1.6G", cwd=str(tmp_path))
    assert_user_error(p, "resnet50", "ImageNet", "FLOPs", "--config configs/imagenet_resnet50.yaml --data DIR",
                      "configs/fashion_mnist_resnet18.yaml")
    assert os.listdir(tmp_path) == []


def test_bare_search_runs_the_paper_config_when_its_data_is_there(tmp_path):
    """With an image folder where the paper's config looks (data/imagenet under the working
    directory), the bare command gets past the data check and into the real search: here the
    budget is then refused for the ImageNet ResNet-50 (a tiny folder, 2 classes), by name."""
    for split in ("train", "val"):
        for cls in ("a", "b"):
            os.makedirs(tmp_path / "data" / "imagenet" / split / cls)
    p = run_tool("search.py", "--budget-flops", "1K", "--out", str(tmp_path / "run"), cwd=str(tmp_path))
    assert_user_error(p, "infeasible", "resnet50")
    assert not os.path.exists(tmp_path / "run")


def test_a_refused_search_leaves_no_folder(tmp_path):
    out = tmp_path / "s"
    p = run_tool("search.py", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                 "--budget-flops", "1K", "--out", str(out))
    assert_user_error(p, "infeasible", "resnet18_small")
    assert not out.exists()
    p = run_tool("search.py", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                 "--budget-flops", "25%", "--set", "search.arch_objective=accuracy", "--out", str(out))
    assert_user_error(p, "search.arch_objective")
    assert not out.exists()


@pytest.mark.parametrize("budget", ["nan%", "inf%", "1e400", "-5%", "0%"])
def test_unreadable_budgets_are_one_line(tmp_path, budget):
    p = run_tool("search.py", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                 "--budget-flops", budget, "--out", str(tmp_path / "s"))
    assert_user_error(p, "budget" if "%" in budget else "count")
    assert not (tmp_path / "s").exists()


def test_arch_json_and_metrics_record_how_the_search_ended(tmp_path):
    out = str(tmp_path / "s")
    cfg = tiny_config(out, **{"train.epochs": 3, "train.limit_batches": 4, "search.budget_flops": "30%"})
    arch = search(cfg, Monitor(out, tensorboard=False))
    st = arch.search
    assert st["method"] == "dan"
    before = st["argmax_before_repair"]
    assert set(before) == {"flops", "params", "over_budget", "in_band"}
    b = arch.budget["flops"]
    assert before["in_band"] == (0.97 * b <= before["flops"] <= 1.03 * b)
    assert abs(before["over_budget"] - before["flops"] / b) < 1e-5
    assert set(st["max_prob"]) == set(arch.probabilities) == set(st["entropy"])
    for g, p in arch.probabilities.items():
        assert abs(st["max_prob"][g] - max(p)) < 1e-5
    assert abs(st["mean_max_prob"] - sum(st["max_prob"].values()) / len(st["max_prob"])) < 1e-5
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert len(rows) == 3
    for r in rows:
        assert 0 < r["arch/mean_max_prob"] <= 1 and r["arch/mean_entropy"] >= 0
        assert "cost/argmax_over_budget" in r and "cost/expected_over_budget" in r
    assert rows[0]["arch/mean_max_prob"] == pytest.approx(1 / 8, abs=1e-6)  # warm-up: still uniform
    # repair moved exactly the groups whose argmax was changed
    argmax = {g: max(range(len(p)), key=p.__getitem__) for g, p in arch.probabilities.items()}
    moved = {g for g in argmax if arch.candidates[g][argmax[g]] != arch.widths[g]}
    assert moved == set(arch.repaired)


def test_tau_is_annealed_per_step_to_tau_min():
    from dan.search_control import SearchControl

    cfg = tiny_config("unused", **{"search.tau0": 4.0, "search.tau_min": 0.1, "search.warmup_epochs": 1,
                                   "search.settle": 0.0})
    c = SearchControl(cfg.search, steps_per_epoch=10, total_steps=30)
    assert c.tau(1, 10) == pytest.approx(4.0)
    assert c.tau(2, 29) == pytest.approx(0.1)
    mid = c.tau(2, 19)
    assert 0.1 < mid < 4.0 and mid == pytest.approx(4.0 * (0.1 / 4.0) ** (9 / 19))
    cfg.search.tau_anneal = "epoch"
    cfg.search.tau_decay = 0.5
    assert c.tau(2) == pytest.approx(2.0)


def test_search_suite_dry_run_lists_every_method_and_budget(tmp_path):
    p = run_tool("reproduce.py", "--suite", "search", "--dry-run", "--out", str(tmp_path / "suite"),
                 "--results", str(tmp_path / "search.md"))  # not the repository's ledger
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("[todo]")]
    for tag in ("flops10", "flops25", "flops50", "params25"):
        for key in ("uniform arch", "dan search", "random arch", "greedy arch", "dan ", "uniform ", "random ",
                    "greedy "):
            assert any(f"] {tag}/{key}" in l for l in lines), (tag, key)
    assert sum("/dan search" in l for l in lines) == 12  # 4 budgets x 3 seeds
    assert any("ablation first-design" in l for l in lines)
    assert sum("/uniform inherited" in l for l in lines) == 12  # weight inheritance by default
    assert not any(l.startswith("[todo] flops10/uniform ") and "--init scratch" in l for l in lines)
    # each run is shown as the library command it starts (python -m dan <command>), never tools/
    expected = {"dan search": "search --config", "uniform arch": "baseline uniform", "random arch": "baseline random",
                "greedy arch": "baseline greedy", "dan": "retrain", "uniform": "retrain", "random": "retrain",
                "greedy": "retrain"}
    for l in lines:
        key, rest = l[len("[todo] "):].split(" seed ", 1)
        method = key.strip().split("/", 1)[1]
        if method.startswith("ablation ") and method.endswith(" arch"):
            # the last step's ablations, and greedy widths ranked on a search variant's own supernet
            tool = next((t for t in ("shortlist", "greedy") if t in method), "refine")
            assert f"python -m dan baseline {tool} --supernet " in rest, l
            continue
        if method.startswith("ablation "):
            method = "dan search" if method.endswith(" search") else "dan"
        method = method.removesuffix(" inherited")
        assert rest.split(": ", 1)[1].startswith(f"python -m dan {expected[method]} "), l
    assert "tools/" not in p.stdout
    assert not os.path.exists(tmp_path / "suite")


def _fake_retrain(run, top1, flops):
    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "summary.json"), "w") as f:
        json.dump({"networks": {"small": {"top1": top1, "flops": flops, "params": 1000,
                                          "latency_ms": {"1": 1.0}}}}, f)


def _fake_arch(run, in_band=True, max_prob=0.8):
    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "arch.json"), "w") as f:
        json.dump({"widths": {"g": 4}, "candidates": {"g": [2, 4, 8]}, "repaired": [],
                   "search": {"argmax_before_repair": {"over_budget": 1.0 if in_band else 1.2, "in_band": in_band},
                              "mean_max_prob": max_prob}}, f)


def test_search_report_computes_verdicts_from_the_runs(tmp_path):
    from dan.report import NOTES_MARK
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    runs = search_suite.plan(str(tmp_path / "suite"), seeds=3, ablations=False)
    scores = {"dan": [0.85, 0.86, 0.855], "uniform": [0.80, 0.81, 0.805], "random": [0.84, 0.86, 0.87],
              "greedy": [0.90, 0.91, 0.905]}
    # weight inheritance: the same scores, but uniform beats DAN
    scores.update({"dan inherited": scores["dan"], "uniform inherited": [0.90, 0.91, 0.905],
                   "random inherited": scores["random"], "greedy inherited": scores["greedy"]})
    for r in runs:
        if r.kind in ("search", "arch"):
            _fake_arch(r, in_band=r.seed != 2, max_prob=0.7)
        elif r.key.startswith("flops10/"):
            _fake_retrain(r, scores[r.key.split("/")[1]][r.seed], 700_000)
    inherited = [r for r in runs if r.key == "flops10/uniform inherited"]
    assert len(inherited) == 3 and all("train.init_from=" + os.path.join(os.path.dirname(r.out), f"dan-search-s{r.seed}",
                                                                          "checkpoints", "last.pt") in r.args
                                       for r in inherited)
    # the scratch recipe starts every method from scratch, DAN's own architecture too (its arch.json
    # sits beside the supernet, where retrain's default --init auto would inherit it)
    scratch_runs = [r for r in runs if r.tool == "retrain" and "inherited" not in r.key]
    assert scratch_runs and all(r.args[r.args.index("--init") + 1] == "scratch" and
                                not any("init_from" in a for a in r.args) for r in scratch_runs)
    md = tmp_path / "search.md"
    text = search_page.write_report(runs, str(md), str(tmp_path / "fig"), "Settings.")
    scratch = text[text.index("### 10"):text.index("#### retrained from that seed's")]
    assert [l for l in text[text.index("#### retrained from that seed's"):].splitlines()
            if l.startswith("| uniform |")][0].endswith("| **not supported** |")
    table = scratch
    line = lambda m: [l for l in table.splitlines() if l.startswith(f"| {m} |")][0]
    assert line("uniform").endswith("| **supported** |")
    assert line("random").endswith("| within seed noise |")
    assert line("greedy").endswith("| **not supported** |")
    assert "| flops10 | 2 of 3 | 0.70 | yes |" in text
    # paired by seed: 0.85-0.80, 0.86-0.81, 0.855-0.805 for uniform; mean of (+1, 0, -1.5) for random
    assert "uniform +5.00 / +5.00 / +5.00 (seeds 0, 1, 2; mean +5.00)" in table
    assert "random +1.00 / +0.00 / -1.50 (seeds 0, 1, 2; mean -0.17)" in table
    assert os.path.isfile(tmp_path / "fig" / "search_top1_vs_flops.png")
    assert os.path.isfile(tmp_path / "fig" / "search_widths.png")
    md.write_text(md.read_text() + "\nhand-written\n")
    text = search_page.write_report(runs, str(md), str(tmp_path / "fig"), "Settings.")
    assert text.count(NOTES_MARK) == 1 and "hand-written" in text


def test_the_page_is_computed_from_the_ledger_when_the_run_folders_are_gone(tmp_path):
    """Writing the page records every finished run in the ledger beside it; with the folders gone
    (another machine, another --out) the page is the same, and the runner makes only what is
    neither finished nor recorded, plus the recorded runs whose folders a run to be made needs."""
    import shutil

    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page
    from dan.suite.ledger import ledger_path
    from dan.suite.run import missing_folders, needed_folders

    kw = dict(seeds=2, ablations=False, recipes=("inherit",), budgets=["flops10"], methods=("dan", "uniform"))
    runs = search_suite.plan(str(tmp_path / "a"), **kw)
    for r in runs:
        if r.kind in ("search", "arch"):
            _fake_arch(r, in_band=True, max_prob=0.7)
        elif r.seed == 0:  # seed 1's retrains not made yet
            _fake_retrain(r, {"dan inherited": 0.88, "uniform inherited": 0.87}[r.key.split("/")[1]], 700_000)
    md = tmp_path / "docs" / "search.md"
    text = search_page.write_report(runs, str(md), str(tmp_path / "fig"), "Settings.")
    assert os.path.isfile(ledger_path(str(md))) and ledger_path(str(md)).endswith("search-runs.json")
    shutil.rmtree(tmp_path / "a")
    moved = search_suite.plan(str(tmp_path / "b"), **kw)  # the same suite under another folder
    again = search_page.write_report(moved, str(md), str(tmp_path / "fig"), "Settings.")
    assert again == text and "| flops10 | 2 of 2 | 0.70 | yes |" in again
    ledger = search_page.suite_ledger(moved, str(md))
    todo, restored = needed_folders(moved, ledger)
    # seed 1's two retrains and seed 1's search (both start from its checkpoint); the uniform
    # architecture, recorded but its folder gone, is needed only for its widths: restored from
    # the record, not made again; none of seed 0's runs
    assert sorted((r.key, r.seed) for r in todo) == [("flops10/dan inherited", 1), ("flops10/dan search", 1),
                                                      ("flops10/uniform inherited", 1)]
    assert [(r.key, r.seed) for r in restored] == [("flops10/uniform arch", 0)]
    assert len(missing_folders(moved, None)) == len(moved)


def test_a_search_remade_with_another_answer_supersedes_the_records_built_on_it(tmp_path):
    """A search whose folder was lost is made again (a run to be made needs its checkpoint) and,
    on another machine, ends on other widths: the recorded retrains cut from the old supernet leave
    the tables (kept under "superseded") and are made again; the other seed's rows stay."""
    import shutil

    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page
    from dan.suite.run import missing_folders

    kw = dict(seeds=2, ablations=False, recipes=("inherit",), budgets=["flops10"], methods=("dan", "uniform"))
    runs = search_suite.plan(str(tmp_path / "a"), **kw)
    for r in runs:
        if r.kind in ("search", "arch"):
            _fake_arch(r)
        else:
            _fake_retrain(r, 0.88, 700_000)
    md = tmp_path / "docs" / "search.md"
    search_page.write_report(runs, str(md), str(tmp_path / "fig"), "Settings.")
    shutil.rmtree(tmp_path / "a")
    runs = search_suite.plan(str(tmp_path / "b"), **kw)
    ledger = search_page.suite_ledger(runs, str(md))
    assert missing_folders(runs, ledger) == []
    search1 = next(r for r in runs if r.key == "flops10/dan search" and r.seed == 1)
    _fake_arch(search1)  # the same answer again: nothing is superseded
    assert ledger.record(runs) == []
    with open(os.path.join(search1.out, "arch.json")) as f:
        arch = json.load(f)
    arch["widths"]["g"] = 8  # another answer
    with open(os.path.join(search1.out, "arch.json"), "w") as f:
        json.dump(arch, f)
    dropped = ledger.record(runs)
    assert sorted(dropped) == ["flops10/search6/dan-inherit-s1", "flops10/search6/uniform-inherit-s1"]
    ledger.save()
    saved = json.loads((tmp_path / "docs" / "search-runs.json").read_text())
    assert sorted(saved["superseded"]) == sorted(dropped) and not set(dropped) & set(saved["runs"])
    again = search_page.suite_ledger(runs, str(md))
    assert sorted((r.key, r.seed) for r in missing_folders(runs, again)) == [
        ("flops10/dan inherited", 1), ("flops10/uniform inherited", 1)]


def test_a_fresh_sample_fixed_in_advance_gets_a_verdict_only_when_every_seed_is_in(tmp_path, monkeypatch):
    """A confirmation sample (CONFIRMATIONS) is the suite's own runs on new seeds: its section shows
    "incomplete" in the verdict columns until both rows have every seed, then its own verdicts over
    its seeds alone, and the pool with the suite's seeds only for reference; --confirmation runs it."""
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    monkeypatch.delitem(search_suite.CONFIRMATIONS, "flops25")
    monkeypatch.setitem(search_suite.CONFIRMATIONS, "flops10", {
        "seeds": range(2, 5), "methods": ("dan", "uniform"), "recipe": "inherit", "declared": "in a test"})
    out = str(tmp_path / "suite")
    kw = dict(ablations=False, recipes=("inherit",), budgets=["flops10"], methods=("dan", "uniform"))
    runs = search_suite.plan(out, seeds=2, **kw)
    confirm = search_suite.confirmation_plan(out)
    assert list(confirm) == ["flops10"]
    fresh = confirm["flops10"]
    # the same runs (folders and commands) as the suite's own plan for those seeds
    same = search_suite.plan(out, seeds=5, first_seed=2, **kw)
    assert [(r.out, r.args) for r in fresh] == [(r.out, r.args) for r in same]
    assert sorted({r.seed for r in fresh if r.kind == "search"}) == [2, 3, 4]
    scores = {"dan inherited": [0.88, 0.89, 0.90, 0.91, 0.90], "uniform inherited": [0.87, 0.88, 0.88, 0.89, 0.89]}
    for r in runs + fresh:
        if r.kind in ("search", "arch"):
            _fake_arch(r)
        elif not (r.seed == 4 and r.key.endswith("uniform inherited")):  # one run still to make
            _fake_retrain(r, scores[r.key.split("/")[1]][r.seed], 700_000)
    md = tmp_path / "docs" / "search.md"
    text = search_page.write_report(runs, str(md), str(tmp_path / "fig"), "Settings.", confirmations=confirm)
    section = text[text.index("## A fresh sample fixed in advance: 10 %"):]
    section = section[:section.index("\n## ")]
    assert "seeds 2-4" in section and "**Incomplete: 2 of 3 seeds finished" in section
    uniform = [l for l in section.splitlines() if l.startswith("| uniform |")][0]
    assert uniform.endswith("| 2 | +1.83 (se 0.60) | incomplete | +2.00 (se 0.00) | incomplete |")
    assert "Its searches: 3 of 3 in the band before repair" in section
    _fake_retrain(next(r for r in fresh if r.seed == 4 and r.key.endswith("uniform inherited")), 0.89, 700_000)
    text = search_page.write_report(runs, str(md), str(tmp_path / "fig"), "Settings.", confirmations=confirm)
    section = text[text.index("## A fresh sample fixed in advance: 10 %"):]
    section = section[:section.index("\n## ")]
    assert "Incomplete" not in section
    uniform = [l for l in section.splitlines() if l.startswith("| uniform |")][0]
    # seeds 2-4 alone: DAN 90.33 vs uniform 88.67; the suite's seeds 0-1 are not in the verdict
    assert uniform.endswith("| 3 | +1.67 (se 0.47) | **supported** | +1.67 (se 0.33) | **supported** |")
    assert "over 5 and 5 seeds" in section and "no verdict is drawn from the pool" in section
    # the main table keeps the suite's own seeds only
    main = text[text.index("### 10 %"):text.index("## A fresh sample")]
    assert [l for l in main.splitlines() if l.startswith("| uniform |")][0].split(" | ")[6] == "2"
    p = run_tool("reproduce.py", "--suite", "search", "--confirmation", "--dry-run", "--out", str(tmp_path / "s2"),
                 "--results", str(tmp_path / "s2.md"))
    assert p.returncode == 0, p.stderr
    planned = [l for l in p.stdout.splitlines() if l.startswith("[todo]")]
    assert sum("flops25/dan search" in l for l in planned) == 32 and not any("flops10" in l for l in planned)
    p = run_tool("reproduce.py", "--suite", "fashion-mnist", "--confirmation", "--dry-run")
    assert_user_error(p, "--suite search")
    p = run_tool("reproduce.py", "--suite", "fashion-mnist", "--budgets", "flops10", "--dry-run")  # was ignored
    assert_user_error(p, "--budgets is for the search suite")


def test_the_page_estimates_the_comparisons_time_from_the_recorded_runs(tmp_path):
    """Each planned run of the default-size comparison counts at the median recorded time of its
    kind (same label and folder, else same label, else same method, else any retrain of its recipe);
    two at once. Runs of a kind never recorded count 0 and are said."""
    from dan.suite.ledger import Ledger
    from dan.suite.search_report import _time_lines

    ledger = Ledger(str(tmp_path / "search-runs.json"), str(tmp_path / "suite"))
    small = {"top1": 0.9, "flops": 1, "params": 1}
    ledger.runs = {"flops10/search6/dan-search-s0": {"label": "flops10/dan search", "seconds": 1100.0},
                   "flops10/search6/dan-search-s1": {"label": "flops10/dan search", "seconds": 1300.0},
                   "flops10/search6/dan-inherit-s0": {"label": "flops10/dan inherited", "seconds": 300.0,
                                                      "small": small}}
    line = _time_lines(str(tmp_path / "suite"), ledger)[0]
    # 12 searches at 1200 s and 48 inherited retrains at 300 s, on two lanes: 4.0 h; the 3-epoch
    # generation's searches fall back to the same label in the other folder
    # (in brackets the summed time over two: here no lane waits, so both agree)
    assert "6-epoch search, inherit recipe (the default): **4.0 h** (4.0)" in line
    assert "3-epoch search, inherit recipe: **4.0 h** (4.0)" in line
    # per plan 4 uniform, 12 random and 12 greedy architectures, plus 48 scratch retrains in both
    # "both recipes" plans: never recorded
    assert "(208 planned runs have no recorded kind and count 0)" in line
    assert _time_lines(str(tmp_path / "suite"), Ledger(str(tmp_path / "none.json"), str(tmp_path))) == []


def test_a_retrain_from_another_supernet_than_its_searchs_record_is_superseded(tmp_path):
    """Searches are recorded with their checkpoint's digest and inherited retrains with the one they
    started from: a search made again on the same widths but other weights supersedes the retrains
    of the old supernet, also one whose folder is still here (it would pair two supernets)."""
    from dan.checkpoint import INIT_FROM, file_digest
    from dan.suite.ledger import Ledger
    from dan.suite.plan import Run

    root = tmp_path / "suite"
    search = Run("flops10/dan search", 0, "search", [], str(root / "dan-search-s0"), kind="search")
    uniform = Run("flops10/uniform arch", 0, "baseline", [], str(root / "uniform-arch"), kind="arch")
    retrains = {m: Run(f"flops10/{m} inherited", 0, "retrain", [], str(root / f"{m}-inherit-s0"),
                       after=[a.out, search.out], arch_only=[] if a is search else [a.out])
                for m, a in (("dan", search), ("uniform", uniform))}
    runs = [search, uniform, *retrains.values()]
    _fake_arch(search)
    _fake_arch(uniform)
    last = os.path.join(search.out, "checkpoints", "last.pt")
    os.makedirs(os.path.dirname(last))

    def supernet(content: bytes):
        with open(last, "wb") as f:
            f.write(content)
        for r in retrains.values():
            _fake_retrain(r, 0.88, 700_000)
            with open(os.path.join(r.out, INIT_FROM), "w") as f:
                json.dump({"path": last, "sha256": file_digest(last)}, f)

    supernet(b"old weights")
    ledger = Ledger(str(tmp_path / "search-runs.json"), str(root))
    assert ledger.record(runs) == [] and ledger.done(retrains["uniform"])
    assert ledger.get(search)["checkpoint_sha256"] == ledger.get(retrains["dan"])["init_sha256"]
    assert "checkpoint_sha256" not in ledger.get(uniform)
    with open(last, "wb") as f:  # made again: the same widths, other weights; the retrains' folders stay
        f.write(b"new weights")
    assert sorted(ledger.record(runs)) == ["dan-inherit-s0", "uniform-inherit-s0"]
    assert not ledger.done(retrains["dan"]) and "uniform-inherit-s0" in ledger.superseded
    supernet(b"new weights")  # retrained from the new one: counted again
    assert ledger.record(runs) == [] and ledger.done(retrains["dan"]) and ledger.done(retrains["uniform"])


def test_the_runner_remaking_a_search_supersedes_the_retrains_recorded_on_it(tmp_path, monkeypatch):
    """The runner itself: a recorded search whose folder is gone is made again because a new run
    (greedy, from its checkpoint) needs it; it ends on another answer, so the recorded DAN retrain
    built on the old one is superseded and logged. Each run's command is a stand-in that writes
    the file its tool would."""
    import shutil
    import sys

    from dan.suite.ledger import Ledger
    from dan.suite.plan import Run
    from dan.suite.run import run as run_suite

    root = tmp_path / "suite"
    search = Run("flops10/dan search", 0, "search", [], str(root / "dan-search-s0"), kind="search")
    retrain = Run("flops10/dan inherited", 0, "retrain", [], str(root / "dan-inherit-s0"), after=[search.out])
    greedy = Run("flops10/greedy arch", 0, "baseline", [], str(root / "greedy-arch-s0"), kind="arch",
                 after=[search.out])
    _fake_arch(search)
    _fake_retrain(retrain, 0.88, 700_000)
    ledger = Ledger(str(tmp_path / "search-runs.json"), str(root))
    ledger.record([search, retrain])
    shutil.rmtree(root)  # the folders are gone (another machine); the records stay
    new_arch = json.dumps({"widths": {"g": 8}, "candidates": {"g": [2, 4, 8]}, "repaired": [], "search": {}})
    script = ("import os, sys; os.makedirs(sys.argv[1], exist_ok=True); "
              "open(os.path.join(sys.argv[1], 'arch.json'), 'w').write(sys.argv[2])")
    monkeypatch.setattr(Run, "command", lambda self: [sys.executable, "-c", script, self.out, new_arch])
    lines: list = []
    run_suite([search, retrain, greedy], log=lines.append, ledger=ledger)
    assert any(line.startswith("[superseded] dan-inherit-s0") for line in lines)
    assert "dan-inherit-s0" in ledger.superseded and not ledger.done(retrain)
    assert ledger.arch(search.out)["widths"] == {"g": 8} and ledger.done(greedy)


def test_a_recorded_search_needed_only_for_its_widths_is_restored_not_made_again(tmp_path, monkeypatch):
    """A retrain from scratch reads only its search's arch.json: with the search's folder gone, the
    runner writes the arch.json from the ledger's widths (``baseline fixed`` with the search's own
    flags) instead of searching again, and the search's record does not change. A later run that
    needs the search's checkpoint makes the search again over the restored folder."""
    import shutil
    import sys

    from dan.suite.ledger import Ledger
    from dan.suite.plan import RESTORED, Run
    from dan.suite.run import missing_folders, needed_folders
    from dan.suite.run import run as run_suite

    root = tmp_path / "suite"
    flags = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--set", "model.args.width=8",
             "--quiet", "--budget-flops", "30%"]
    search = Run("flops10/dan search", 0, "search", flags + ["--out", str(root / "dan-search-s0")],
                 str(root / "dan-search-s0"), kind="search")
    # the search's answer: a real arch.json of this network at that budget, with a search record
    assert run_tool("baseline.py", "uniform", *flags, "--out", search.out).returncode == 0
    with open(os.path.join(search.out, "arch.json")) as f:
        arch = json.load(f)
    arch["search"] = {"method": "dan", "mean_max_prob": 0.8}
    with open(os.path.join(search.out, "arch.json"), "w") as f:
        json.dump(arch, f)
    ledger = Ledger(str(tmp_path / "search-runs.json"), str(root))
    ledger.record([search])
    recorded = json.dumps(ledger.runs, sort_keys=True)
    shutil.rmtree(root)
    scratch = Run("flops10/dan", 0, "retrain", [], str(root / "dan-s0"), after=[search.out], arch_only=[search.out])
    inherit = Run("flops10/dan inherited", 0, "retrain", [], str(root / "dan-inherit-s0"), after=[search.out])
    assert needed_folders([search, scratch], ledger) == ([scratch], [search])
    assert missing_folders([search, scratch, inherit], ledger) == [search, scratch, inherit]
    # stand-ins: a retrain writes its summary (after checking the arch.json it reads is there); a
    # search writes its arch.json again
    script = ("import json, os, sys; out, arch = sys.argv[1], sys.argv[2]; os.makedirs(out, exist_ok=True); "
              "assert out == arch or os.path.isfile(os.path.join(arch, 'arch.json')); "
              "open(os.path.join(out, 'summary.json' if out != arch else 'arch.json'), 'w').write(sys.argv[3])")
    summary = json.dumps({"networks": {"small": {"top1": 0.8, "flops": 1, "params": 1}}})
    monkeypatch.setattr(Run, "command", lambda self: [sys.executable, "-c", script, self.out, search.out,
                                                      json.dumps(arch) if self.kind == "search" else summary])
    lines: list = []
    run_suite([search, scratch], log=lines.append, ledger=ledger)
    assert any(line.startswith("[restore] " + search.out) for line in lines)
    assert f"{search.out} {search.out}" not in "\n".join(lines)  # the search's own command never ran
    with open(os.path.join(search.out, "arch.json")) as f:
        restored = json.load(f)
    assert restored["widths"] == arch["widths"] and restored["small"] == arch["small"]
    assert restored["search"]["method"] == "fixed" and os.path.isfile(os.path.join(search.out, RESTORED))
    assert not search.done and ledger.done(scratch) and json.dumps(
        {k: v for k, v in ledger.runs.items() if k != "dan-s0"}, sort_keys=True) == recorded
    # a retrain from the checkpoint now: the search is made again over the restored folder
    lines.clear()
    run_suite([search, scratch, inherit], log=lines.append, ledger=ledger)
    assert any(line.startswith("[restart] " + search.out) and "restored" in line for line in lines)
    assert f"{search.out} {search.out}" in "\n".join(lines)
    assert search.done and ledger.done(inherit) and not ledger.superseded


def test_the_committed_ledger_pairs_each_search_with_its_own_retrain():
    """docs/search-runs.json: every search recorded without repair has the cost of the DAN retrain
    recorded beside it (the same widths, so not a retrain of another search's answer)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "search-runs.json")
    with open(path) as f:
        runs = json.load(f)["runs"]
    checked = 0
    for key, rec in runs.items():
        arch = rec.get("arch") or {}
        end = (arch.get("search") or {}).get("argmax_before_repair")
        retrain = runs.get(key.replace("-search-s", "-inherit-s"))
        if "-search-s" not in key or arch.get("repaired") or not end or retrain is None:
            continue
        assert (retrain["small"]["flops"], retrain["small"]["params"]) == (end["flops"], end["params"]), key
        checked += 1
    assert checked >= 79


def test_search_report_with_some_methods_and_unfinished_runs(tmp_path):
    """A suite run with --methods dan,uniform at one budget and more seeds planned than finished:
    the page shows what finished, with the seeds each row has."""
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    runs = search_suite.plan(str(tmp_path / "suite"), seeds=5, ablations=False, recipes=("inherit",),
                             budgets=["flops50"], methods=("dan", "uniform"))
    scores = {"dan inherited": [0.90, 0.91, 0.905], "uniform inherited": [0.89, 0.90, 0.895]}
    for r in runs:
        if r.seed > 2:
            continue  # seeds 3 and 4 not run
        if r.kind in ("search", "arch"):
            _fake_arch(r, in_band=True, max_prob=0.65)
        else:
            _fake_retrain(r, scores[r.key.split("/")[1]][r.seed], 3_000_000)
    text = search_page.write_report(runs, str(tmp_path / "search.md"), str(tmp_path / "fig"),
                                     search_page.settings_text(5))
    table = text[text.index("### 50"):]
    line = lambda m: [l for l in table.splitlines() if l.startswith(f"| {m} |")][0]
    assert "| 3 |" in line("dan") and "+1.00" in line("uniform")
    assert not any(l.startswith(("| random |", "| greedy |")) for l in table.splitlines())
    assert "| flops50 | 3 of 3 | 0.65 | yes |" in text
    assert "seeds 0, 1, 2, 3, 4 (each table's seeds column" in text


def test_the_suite_keeps_one_elapsed_time_whichever_budgets_run(tmp_path):
    from dan.suite import search as search_suite
    from dan.suite.run import add_elapsed, elapsed_seconds

    os.makedirs(tmp_path / "suite")
    ten = search_suite.plan(str(tmp_path / "suite"), seeds=1, ablations=False, budgets=["flops10"])
    add_elapsed(ten, 60.0)
    rest = search_suite.plan(str(tmp_path / "suite"), seeds=1, ablations=False, budgets=["flops50", "params25"])
    add_elapsed(rest, 30.0)
    everything = search_suite.plan(str(tmp_path / "suite"), seeds=5, ablations=False)
    assert elapsed_seconds(everything) == 90.0
    assert os.listdir(tmp_path / "suite") == ["suite_elapsed.json"]


def test_search_suite_plans_only_the_chosen_budgets_and_recipes(tmp_path):
    from dan.suite import search as search_suite

    runs = search_suite.plan(str(tmp_path), seeds=2, ablations=False, recipes=("inherit",), budgets=["flops25"])
    assert {r.key.split("/")[0] for r in runs} == {"flops25"}
    retrains = [r for r in runs if r.tool == "retrain"]
    assert len(retrains) == 8 and all(r.key.endswith(" inherited") for r in retrains)
    assert all(any(a.endswith(f"dan-search-s{r.seed}") for a in r.after) for r in retrains)
    with pytest.raises(dan.UserError, match="unknown budget 'flops5'"):
        search_suite.plan(str(tmp_path), budgets=["flops5"])
    with pytest.raises(dan.UserError, match="unknown retrain recipe"):
        search_suite.plan(str(tmp_path), recipes=("warm",))
    # a cheaper comparison: DAN against uniform widths only (the search is planned all the same)
    some = search_suite.plan(str(tmp_path), seeds=2, ablations=False, recipes=("inherit",),
                             budgets=["flops50"], methods=("dan", "uniform"))
    assert sorted({r.key.split("/")[1] for r in some}) == ["dan inherited", "dan search", "uniform arch",
                                                         "uniform inherited"]
    with pytest.raises(dan.UserError, match="unknown method 'slim'"):
        search_suite.plan(str(tmp_path), methods=("dan", "slim"))
    # more seeds, or a method on new seeds only: seeds first_seed..seeds-1, ablations included
    late = search_suite.plan(str(tmp_path), seeds=5, first_seed=3, ablations=("settle-fine",), recipes=("inherit",),
                             budgets=["flops10"], methods=("dan", "greedy"))
    assert {r.seed for r in late if r.key != "flops10/uniform arch"} == {3, 4}
    assert {"flops10/greedy arch", "flops10/ablation settle-fine search"} <= {r.key for r in late}
    with pytest.raises(dan.UserError, match="first seed 2 is not below the number of seeds"):
        search_suite.plan(str(tmp_path), seeds=2, first_seed=2)


def test_last_step_ablations_refine_the_default_searches_supernets(tmp_path):
    """refine / no-refine: arch from the default search's checkpoint, retrained from it; the
    ablation table compares them with DAN and every baseline retrained the same way."""
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    runs = search_suite.plan(str(tmp_path / "suite"), seeds=3, ablations=("refine",), recipes=("inherit",),
                             budgets=["flops10"])
    archs = [r for r in runs if r.key == "flops10/ablation refine arch"]
    retrains = [r for r in runs if r.key == "flops10/ablation refine inherited"]
    assert len(archs) == len(retrains) == 3 and not any("no-refine" in r.key for r in runs)
    for a, r in zip(archs, retrains):
        gen = search_suite.GENERATIONS[search_suite.GENERATION][0]  # the default search's folder
        last = os.path.join(str(tmp_path / "suite"), "flops10", gen, f"dan-search-s{a.seed}", "checkpoints", "last.pt")
        assert a.args[:3] == ["refine", "--supernet", last] and a.args[a.args.index("--rounds") + 1] == "8"
        assert r.args[0] == os.path.join(a.out, "arch.json") and f"train.init_from={last}" in r.args
    assert not [r for r in search_suite.plan(str(tmp_path), ablations=("refine",), recipes=("scratch",))
                if "refine" in r.key]  # inherit recipe only
    # a search variant under the inherit recipe retrains from its own supernet
    kl = [r for r in search_suite.plan(str(tmp_path), seeds=1, ablations=("kl-only",), recipes=("inherit",),
                                       budgets=["flops25"]) if "kl-only" in r.key]
    assert [r.key for r in kl] == ["flops25/ablation kl-only search", "flops25/ablation kl-only inherited"]
    assert f"train.init_from={os.path.join(kl[0].out, 'checkpoints', 'last.pt')}" in kl[1].args
    with pytest.raises(dan.UserError, match="unknown ablation 'polish'"):
        search_suite.plan(str(tmp_path), ablations=("polish",))
    scores = {"dan inherited": [0.85, 0.86, 0.855], "uniform inherited": [0.80, 0.81, 0.805],
              "random inherited": [0.84, 0.86, 0.87], "greedy inherited": [0.90, 0.91, 0.905],
              "ablation refine inherited": [0.87, 0.88, 0.875]}
    for r in runs:
        if r.kind in ("search", "arch"):
            _fake_arch(r, in_band=True, max_prob=0.7)
        else:
            _fake_retrain(r, scores[r.key.split("/")[1]][r.seed], 700_000)
    text = search_page.write_report(runs, str(tmp_path / "search.md"), str(tmp_path / "fig"), "Settings.")
    row = [l for l in text.splitlines() if l.startswith("| flops10 | refine |")][0]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3] == "inherit" and cells[5] == "3" and cells[6] == "3 of 3"
    assert cells[8].startswith("+2.00") and "**supported**" in cells[8]  # vs DAN
    assert cells[9].startswith("+7.00") and "**supported**" in cells[9]  # vs uniform
    assert cells[11].startswith("-3.00") and "**not supported**" in cells[11]  # vs greedy


def test_a_variant_that_trains_its_supernet_longer_is_compared_with_baselines_from_its_own_supernet(tmp_path):
    """long-supernet: searched for 6 epochs but retrained for the suite's 3 like every row, and
    uniform widths are retrained from its own supernet too (a better-trained supernet starts every
    architecture higher); the table's "variant − uniform" uses those, paired by seed."""
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    root = str(tmp_path / "suite")
    # the 3-epoch generation of the default search, where long-supernet was measured as a variant
    runs = search_suite.plan(root, seeds=2, ablations=("long-supernet",), recipes=("inherit",),
                             budgets=["flops25"], methods=("dan",), generation="3-epoch")
    keys = [r.key for r in runs]
    assert "flops25/uniform arch" in keys  # needed by the ablation though the uniform row is not planned
    assert "flops25/uniform inherited" not in keys
    searches = [r for r in runs if r.key == "flops25/ablation long-supernet search"]
    own = [r for r in runs if r.key == "flops25/ablation long-supernet inherited"]
    base = [r for r in runs if r.key == "flops25/ablation long-supernet uniform inherited"]
    rand = [r for r in runs if r.key == "flops25/ablation long-supernet random inherited"]
    greedy = [r for r in runs if r.key == "flops25/ablation long-supernet greedy inherited"]
    g_arch = [r for r in runs if r.key == "flops25/ablation long-supernet greedy arch"]
    assert len(searches) == len(own) == len(base) == len(rand) == len(greedy) == len(g_arch) == 2
    assert "flops25/random arch" in keys and "flops25/random inherited" not in keys
    assert "flops25/greedy arch" not in keys  # greedy is ranked on the variant's supernet, not the default's
    for s, v, u, x, g, ga in zip(searches, own, base, rand, greedy, g_arch):
        assert ga.args[ga.args.index("--supernet") + 1] == os.path.join(s.out, "checkpoints", "last.pt")
        assert g.args[0] == os.path.join(ga.out, "arch.json") and ga.out in g.after
        assert g.args[g.args.index("--epochs") + 1] == "3"  # greedy's arch.json holds the search's 6
        assert "train.epochs=6" in s.args and "search.warmup_epochs=2" in s.args
        assert v.args[v.args.index("--epochs") + 1] == "3"  # the suite's recipe, not the search's 6
        init = f"train.init_from={os.path.join(s.out, 'checkpoints', 'last.pt')}"
        assert init in v.args and init in u.args
        assert u.args[0] == os.path.join(root, "flops25", "uniform-arch", "arch.json") and s.out in u.after
        assert x.args[0] == os.path.join(root, "flops25", f"random-arch-s{s.seed}", "arch.json") and s.out in x.after
        assert init in x.args
    scores = {"dan inherited": [0.85, 0.86], "ablation long-supernet inherited": [0.90, 0.91],
              "ablation long-supernet uniform inherited": [0.89, 0.905],
              "ablation long-supernet random inherited": [0.87, 0.88],
              "ablation long-supernet greedy inherited": [0.90, 0.915]}
    for r in runs:
        if r.kind in ("search", "arch"):
            _fake_arch(r, in_band=True, max_prob=0.7)
        else:
            _fake_retrain(r, scores[r.key.split("/")[1]][r.seed], 1_800_000)
    extra = runs + search_suite.plan(root, seeds=2, ablations=False, recipes=("inherit",), budgets=["flops25"],
                                     methods=("uniform",), generation="3-epoch")
    for r in extra[len(runs):]:  # uniform retrained from the default supernets: far lower here
        if r.key == "flops25/uniform inherited":
            _fake_retrain(r, 0.80, 1_800_000)
    text = search_page.write_report(extra, str(tmp_path / "search.md"), str(tmp_path / "fig"), "Settings.")
    row = [l for l in text.splitlines() if l.startswith("| flops25 | long-supernet |")][0]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[8].startswith("+5.00")  # vs the default DAN row
    assert cells[9].startswith("+0.75") and cells[9].endswith("vs its own supernet's")  # not +10.5
    assert cells[10].startswith("+3.00") and cells[10].endswith("vs its own supernet's")
    assert cells[11].startswith("-0.25") and cells[11].endswith("vs its own supernet's")


def test_check_search_config_names_the_key():
    from dan.search import check_search_config

    cfg = tiny_config("unused")
    cfg.search.budget_control = "median"
    with pytest.raises(dan.UserError, match="search.budget_control"):
        check_search_config(cfg.search)
    cfg = tiny_config("unused")
    cfg.search.tau0 = float("nan")
    with pytest.raises(dan.UserError, match="search.tau0"):
        check_search_config(cfg.search)


class _FakeRun:
    """A Run whose command writes its marker after a short sleep and records the order."""

    def __init__(self, out, after=(), kind="train", log=None, fail=False):
        from dan.suite import Run

        self.r = Run("k", 0, "x", [], out, kind=kind, after=list(after))
        self.log, self.fail = log, fail

    def command(self):
        import sys

        marker = "arch.json" if self.r.kind in ("search", "arch") else "summary.json"
        code = (f"import os, time; time.sleep(0.3); open({self.log!r}, 'a').write({self.r.out!r} + '\\n'); "
                f"os.makedirs({self.r.out!r}, exist_ok=True); "
                + ("raise SystemExit(3)" if self.fail else f"open(os.path.join({self.r.out!r}, {marker!r}), 'w').write('{{}}')"))
        return [sys.executable, "-c", code]


@pytest.mark.parametrize("jobs", [1, 2])
def test_suite_runner_respects_dependencies_and_stops_on_failure(tmp_path, jobs, monkeypatch):
    from dan import suite

    log = str(tmp_path / "order.txt")
    a = _FakeRun(str(tmp_path / "a"), kind="search", log=log)
    b = _FakeRun(str(tmp_path / "b"), after=[str(tmp_path / "a")], log=log)
    c = _FakeRun(str(tmp_path / "c"), log=log)
    fakes = {id(f.r): f for f in (a, b, c)}
    monkeypatch.setattr(suite.Run, "command", lambda self: fakes[id(self)].command())
    suite.run([a.r, b.r, c.r], log=lambda m: None, jobs=jobs)
    order = open(log).read().split()
    assert sorted(order) == sorted([a.r.out, b.r.out, c.r.out])
    assert order.index(a.r.out) < order.index(b.r.out)
    assert all(r.done for r in (a.r, b.r, c.r))
    # a failing run stops the suite with one line; runs that depend on it never start
    log2 = str(tmp_path / "order2.txt")
    d = _FakeRun(str(tmp_path / "d"), kind="search", log=log2, fail=True)
    e = _FakeRun(str(tmp_path / "e"), after=[str(tmp_path / "d")], log=log2)
    fakes.update({id(d.r): d, id(e.r): e})
    with pytest.raises(dan.UserError, match="run failed"):
        suite.run([d.r, e.r], log=lambda m: None, jobs=jobs)
    assert not e.r.done


def test_a_stop_file_stops_the_suite_between_runs_and_the_same_command_goes_on(tmp_path, monkeypatch):
    """``touch <suite>/suite_stop``: the running run finishes and is kept, nothing new starts, the
    file is removed; the same call then makes the rest."""
    from dan import suite
    from dan.suite.run import STOP_FILE

    log = str(tmp_path / "order.txt")
    stop = tmp_path / STOP_FILE
    a = _FakeRun(str(tmp_path / "a"), kind="search", log=log)
    b = _FakeRun(str(tmp_path / "b"), after=[str(tmp_path / "a")], log=log)
    c = _FakeRun(str(tmp_path / "c"), log=log)
    fakes = {id(f.r): f for f in (a, b, c)}
    first = a.command()
    first[-1] = f"open({str(stop)!r}, 'w').close(); " + first[-1]  # asked to stop while a runs
    monkeypatch.setattr(suite.Run, "command", lambda self: first if self is a.r else fakes[id(self)].command())
    for r in (a.r, b.r, c.r):
        r.root = str(tmp_path)
    lines = []
    suite.run([a.r, b.r, c.r], log=lines.append, jobs=1)
    assert a.r.done and not b.r.done and not c.r.done and not stop.exists()
    assert any(l.startswith("[stopped]") and "2 not started" in l for l in lines)
    suite.run([a.r, b.r, c.r], log=lines.append, jobs=1)
    assert b.r.done and c.r.done and open(log).read().split().count(a.r.out) == 1


@pytest.mark.parametrize("control", ["expected", "blend"])
def test_the_multiplier_watches_the_expected_or_the_blended_cost(tmp_path, control):
    """One architecture step moves μ by multiplier_lr/steps · (watched − (1 − band/2)), where the
    watched cost is E[cost]/B ("expected") or (1 − w)·E[cost]/B + w·argmax cost/B with w the mean
    largest probability ("blend"); recomputed here from the logits after the step."""
    import torch

    from dan.search import Searcher

    cfg = tiny_config(str(tmp_path / "s"), **{"search.budget_flops": "30%", "search.budget_control": control})
    s = Searcher(cfg, monitor=Monitor(None))
    with torch.no_grad():  # mass split between a narrow argmax and the widest candidate
        for t in s.sn.arch.logits:
            t.fill_(-3.0)
            t[0], t[-1] = 1.0, 0.6
    x, y = next(iter(s.data.holdout))
    mu0 = s.control.mu = 0.5
    s.arch_step(s.prep(x), y, 0.5, 1.0)
    with torch.no_grad():
        e = float(s.cost.norm(*s.sn.expected_cost()))
        a = s.cost.norm(*s.sn.cost_of(s.sn.arch.argmax()))
        w = float(torch.stack([p.max() for p in s.sn.arch.probs()]).mean())
    watched = e if control == "expected" else (1 - w) * e + w * a
    target = 1 - cfg.search.band / 2 if control == "expected" else 1.0
    assert a < e  # the case the blend exists for: the argmax is cheaper than the expectation
    assert s.control.mu - mu0 == pytest.approx(cfg.search.multiplier_lr / s.steps_per_epoch * (watched - target), rel=1e-6)



def test_the_settle_phase_holds_tau_min_and_marks_the_last_steps():
    """settle 0.25 of 20 architecture steps (19 intervals): the anneal ends at step 10 + 14.25 and
    tau_min holds from there; the last quarter of the steps is the settle phase."""
    from dan.search_control import SearchControl

    cfg = tiny_config("unused", **{"search.tau0": 4.0, "search.tau_min": 0.1, "search.warmup_epochs": 1,
                                   "search.settle": 0.25})
    c = SearchControl(cfg.search, steps_per_epoch=10, total_steps=30)
    assert c.tau(1, 10) == pytest.approx(4.0)
    assert c.tau(2, 17) == pytest.approx(4.0 * (0.1 / 4.0) ** (7 / 14.25))
    assert c.tau(2, 25) == pytest.approx(0.1) and c.tau(2, 29) == pytest.approx(0.1)
    assert [st for st in range(30) if c.settling(st)] == list(range(25, 30))
    cfg.search.settle = 0.0
    assert not any(c.settling(st) for st in range(30))


@pytest.mark.parametrize("where", ["below", "inside", "above"])
def test_the_settle_phase_moves_the_multiplier_by_the_argmax_cost(tmp_path, where):
    """In the settle phase one architecture step moves mu by s·settle_gain·v·max(|mu|, 0.25)/n, with
    v = argmax cost/B − 1, n the number of settle steps and s halved at every jump over the band,
    only when the argmax network is outside the band; E[cost] no longer matters (the logits put mass on the widest candidate, so E[cost]
    and the argmax cost differ)."""
    import torch

    from dan.search import SETTLE_MU_FLOOR, Searcher

    cfg = tiny_config(str(tmp_path / "s"), **{"search.budget_flops": "30%", "search.settle": 0.5,
                                              "search.band": 0.03, "search.settle_until": "landed",
                                              "search.settle_snap": 1.0,  # no deadline landing here,
                                              "search.settle_vernier": 1.0})  # nor a vernier restart
    s = Searcher(cfg, monitor=Monitor(None))
    with torch.no_grad():
        for t in s.sn.arch.logits:
            t.fill_(-3.0)
            t[0], t[-1] = 1.0, 0.6
    a0 = s.cost.norm(*s.sn.cost_of(s.sn.arch.argmax()))
    # put the argmax where the case wants it by choosing the budget the costs are divided by
    scale = {"below": 1 / 0.9, "inside": 1.0, "above": 1 / 1.1}[where]
    s.budget.value = s.budget.value * a0 * scale
    s.step = s.total_steps - 1
    assert s.control.settling(s.step)
    x, y = next(iter(s.data.holdout))
    mu0 = s.control.mu = 0.5
    s.control.settle_side = 1  # last seen above the band: from below, the argmax jumped over it
    s.arch_step(s.prep(x), y, 0.9, 0.1)
    with torch.no_grad():
        v = s.cost.norm(*s.sn.cost_of(s.sn.arch.argmax())) - 1.0
    first = math.ceil(cfg.search.warmup_epochs) * s.steps_per_epoch
    n = max(1.0, (s.total_steps - first) * cfg.search.settle)
    scale = 0.5 if where == "below" else 1.0  # a jump over the band halves the steps
    expected = 0.0 if abs(v) <= cfg.search.band else scale * cfg.search.settle_gain * v * max(mu0, SETTLE_MU_FLOOR) / n
    assert s.control.settle_scale == scale
    assert s.control.mu - mu0 == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert (s.control.mu > mu0, s.control.mu < mu0) == {"below": (False, True), "inside": (False, False),
                                        "above": (True, False)}[where]
    # landing inside the band ends the architecture steps; the weights go on
    assert (s.control.settled_at == s.step) == (abs(v) <= cfg.search.band) == (where == "inside")
    if s.control.settled_at is not None:
        s.arch_step = lambda *a: pytest.fail("an architecture step after the search settled")
        s.begin_epoch(s.epoch)
        s.train_step(s.prep(x), y)
        assert s.state()["settled_at"] == s.step


@pytest.mark.parametrize("until", ["landed", "end"])
def test_settle_until_end_keeps_the_architecture_steps_after_the_landing(until):
    """settle_until "landed" stops the architecture steps at the first landing; "end" keeps them
    going, records the first landing only, and moves mu only while the argmax is outside the band."""
    from dan.config import SearchConfig
    from dan.search_control import SearchControl

    s = SearchConfig(settle=0.5, band=0.03, settle_until=until, warmup_epochs=1)
    c = SearchControl(s, steps_per_epoch=10, total_steps=30)
    step = 29  # in the settle phase
    assert c.settling(step)
    c.mu = 0.5
    c.update(step - 2, expected=lambda: 9.0, argmax=lambda: 1.01, committed=lambda: 1.0)  # lands
    assert c.settled_at == step - 2 and c.mu == 0.5
    assert c.arch_steps_over() == (until == "landed")
    c.update(step - 1, expected=lambda: 9.0, argmax=lambda: 1.2, committed=lambda: 1.0)  # drifts above
    assert c.mu > 0.5 and c.settled_at == step - 2  # the first landing stays recorded
    mu = c.mu
    c.update(step, expected=lambda: 9.0, argmax=lambda: 0.99, committed=lambda: 1.0)  # back in band
    assert c.mu == mu and c.settled_at == step - 2


@pytest.mark.parametrize("regrow", [1.0, 1.5])
def test_settle_regrow_restores_the_halved_steps_on_the_same_side(regrow):
    """A jump over the band halves the settle steps; with settle_regrow > 1 each later step on the
    same side multiplies them by it, never above the full size; at 1.0 (off) they stay halved."""
    from dan.config import SearchConfig
    from dan.search_control import SearchControl

    s = SearchConfig(settle=0.5, band=0.03, settle_regrow=regrow, warmup_epochs=1)
    c = SearchControl(s, steps_per_epoch=10, total_steps=30)
    step = 29
    assert c.settling(step)
    c.mu = 0.5
    c.update(step, expected=lambda: 9.0, argmax=lambda: 1.2, committed=lambda: 1.0)  # above
    assert c.settle_scale == 1.0
    c.update(step, expected=lambda: 9.0, argmax=lambda: 0.8, committed=lambda: 1.0)  # jumped below
    c.update(step, expected=lambda: 9.0, argmax=lambda: 1.2, committed=lambda: 1.0)  # and back above
    assert c.settle_scale == pytest.approx(0.25)
    c.update(step, expected=lambda: 9.0, argmax=lambda: 1.2, committed=lambda: 1.0)  # above again
    assert c.settle_scale == pytest.approx(0.25 * regrow)
    mu = c.mu
    for _ in range(10):
        c.update(step, expected=lambda: 9.0, argmax=lambda: 1.2, committed=lambda: 1.0)
    assert c.settle_scale == pytest.approx(min(1.0, 0.25 * regrow ** 11))
    assert c.mu > mu


@pytest.mark.parametrize("reset", [False, True])
def test_settle_sign_reset_zeroes_a_multiplier_that_pushes_the_argmax_further_out(reset):
    """settle_sign_reset: past the vernier's deadline, mu < 0 with the argmax above the band (or mu > 0
    below it) is set to 0 before the step, so the step leaves it with the violation's sign; without it
    mu only moves towards zero by a step; a mu of the right sign, or one inside the band, is not
    reset, and neither is one before the deadline."""
    from dan.config import SearchConfig
    from dan.search_control import SearchControl

    s = SearchConfig(settle=0.5, band=0.03, settle_sign_reset=reset, warmup_epochs=1)
    c = SearchControl(s, steps_per_epoch=100, total_steps=300)  # settle steps of about 1 % of mu
    step = 299
    assert c.settling(step)
    c.mu = -0.08
    c.update(step, expected=lambda: 9.0, argmax=lambda: 1.3, committed=lambda: 1.0)  # before the deadline
    assert -0.08 < c.mu < 0
    c.vernier_from = step
    for mu, cost in ((-0.08, 1.3), (0.49, 0.8)):
        c.mu = mu
        c.update(step, expected=lambda: 9.0, argmax=lambda: cost, committed=lambda: 1.0)
        if reset:
            assert c.mu * (cost - 1) > 0  # the violation's sign
        else:
            assert c.mu * mu > 0 and abs(c.mu) < abs(mu)  # one step towards zero, still the wrong sign
    c.mu = 0.3
    c.update(step, expected=lambda: 9.0, argmax=lambda: 1.3, committed=lambda: 1.0)  # right sign: a step
    assert c.mu > 0.3
    c.mu = -0.2
    c.update(step, expected=lambda: 9.0, argmax=lambda: 1.01, committed=lambda: 1.0)  # in the band
    assert c.mu == -0.2


def test_settle_regrow_below_one_is_refused():
    from dan.config import SearchConfig, check_search_config

    with pytest.raises(dan.UserError, match="settle_regrow"):
        check_search_config(SearchConfig(settle_regrow=0.5))


def test_the_settle_deadline_falls_at_its_fraction_of_the_settle_phase():
    """settle 0.5 of 20 architecture steps (19 intervals) starts at step 19.5; a deadline at half of
    it falls at 10 + 19·0.75 = 24.25; a search that landed, or already tried, is not due; 1.0 is off."""
    from dan.config import SearchConfig, check_search_config
    from dan.search_control import SearchControl

    c = SearchControl(SearchConfig(settle=0.5, settle_snap=0.5, warmup_epochs=1), steps_per_epoch=10, total_steps=30)
    assert [st for st in range(30) if c.snap_due(st)] == list(range(25, 30))
    c.snapped = []
    assert not any(c.snap_due(st) for st in range(30))
    c.snapped, c.settled_at = None, 22
    assert not any(c.snap_due(st) for st in range(30))
    off = SearchControl(SearchConfig(settle=0.5, settle_snap=1.0, warmup_epochs=1), steps_per_epoch=10, total_steps=30)
    assert not any(off.snap_due(st) for st in range(30))
    with pytest.raises(dan.UserError, match="settle_snap"):
        check_search_config(SearchConfig(settle_snap=1.5))


def test_the_vernier_starts_at_its_deadline_only_if_the_argmax_has_not_landed():
    """settle_vernier 0.5 (deadline at step 24.25, as above): from step 25 on the penalty reaches only
    the fine groups and the settle steps restart at full size; it stays on once started, survives a
    checkpoint, and never starts for a search that landed before the deadline, or when off (1.0)."""
    from dan.config import SearchConfig, check_search_config
    from dan.search_control import SearchControl

    cfg = SearchConfig(settle=0.5, settle_vernier=0.5, warmup_epochs=1)
    c = SearchControl(cfg, steps_per_epoch=10, total_steps=30)
    c.settle_scale, c.settle_side = 1 / 64, 1  # frozen by jumps over the band
    assert not any(c.fine_only(st) for st in range(25)) and c.settle_scale == 1 / 64
    assert c.fine_only(25) and c.vernier_from == 25 and (c.settle_scale, c.settle_side) == (1.0, 0)
    c.settled_at = 27  # landed by its own steps: the penalty stays where it was
    assert all(c.fine_only(st) for st in range(25, 30)) and c.vernier_from == 25
    again = SearchControl(cfg, steps_per_epoch=10, total_steps=30)
    again.load(c.state())
    assert again.vernier_from == 25 and again.fine_only(26)
    landed = SearchControl(cfg, steps_per_epoch=10, total_steps=30)
    landed.settled_at = 21
    assert not any(landed.fine_only(st) for st in range(30)) and landed.vernier_from is None
    off = SearchControl(SearchConfig(settle=0.5, settle_vernier=1.0, warmup_epochs=1), steps_per_epoch=10,
                        total_steps=30)
    assert not any(off.fine_only(st) for st in range(30))
    assert SearchConfig().settle_vernier == 0.5  # the default since the twenty-second session
    with pytest.raises(dan.UserError, match="settle_vernier"):
        check_search_config(SearchConfig(settle_vernier=-0.1))


def test_a_search_past_the_vernier_deadline_says_so_in_arch_json(tmp_path):
    """settle_vernier 0: the deadline is the settle phase's first step, where no landing can have
    been seen yet, so the vernier starts there; arch.json records the step."""
    from dan.search import Searcher

    out = str(tmp_path / "s")
    cfg = tiny_config(out, **{"train.epochs": 3, "train.limit_batches": 4, "search.budget_flops": "30%",
                              "search.settle_vernier": 0.0})
    s = Searcher(cfg, monitor=Monitor(None))
    arch = s.fit()
    start = arch.search["settle_vernier_from"]
    assert start is not None and s.control.settling(start) and not s.control.settling(start - 1)
    with open(os.path.join(out, "arch.json")) as f:
        assert json.load(f)["search"]["settle_vernier_from"] == start


@pytest.mark.parametrize("feasible", [True, False])
def test_the_settle_deadline_lands_the_argmax_by_swapping_logits(tmp_path, feasible):
    """At the deadline the argmax (here 1.1 B) is landed by repair's move, made on the logits: each
    moved group's new candidate and old argmax swap logits and Adam moments, the argmax is in the
    band and the landing is recorded (state and arch.json); with no network in the band nothing moves."""
    import torch

    from dan.search import Searcher, settle_snap
    from dan.supernet import repair

    cfg = tiny_config(str(tmp_path / "s"), **{"search.budget_flops": "30%", "search.settle_snap": 0.5})
    s = Searcher(cfg, monitor=Monitor(None))
    x, y = next(iter(s.data.holdout))
    s.step = math.ceil(cfg.search.warmup_epochs) * s.steps_per_epoch  # an early step: Adam gets moments
    s.arch_step(s.prep(x), y, 0.5, 1.0)
    with torch.no_grad():
        for t in s.sn.arch.logits:
            t.copy_(torch.linspace(-1.0, 1.0, len(t))[torch.randperm(len(t))])
    start = s.sn.arch.argmax()
    s.budget.value = s.cost.of(start) / (1.1 if feasible else 1e6)
    logits = [t.detach().clone() for t in s.sn.arch.logits]
    moments = [s.a_opt.state[t]["exp_avg"].clone() for t in s.sn.arch.logits]
    # the move the search's end would make (dan.search_result.repaired_argmax): the same
    # log-probabilities, so a near-tie between two moves breaks the same way at both
    logp = [torch.log(torch.softmax(t, 0).double() + 1e-12).tolist() for t in logits]
    expected = repair(start, s.sn.cands, logp, s.cost.of, s.budget.lo, s.budget.hi)
    s.step = s.total_steps - 1
    assert s.control.snap_due(s.step)
    settle_snap(s)
    moved = [g.name for g, a, b in zip(s.sn.groups, start, expected) if a != b]
    if not feasible:
        assert s.control.snapped == [] and s.control.settled_at is None
        assert all(torch.equal(a, b) for a, b in zip(logits, s.sn.arch.logits))
        assert not s.control.snap_due(s.step)  # tried once
        return
    assert moved and s.control.snapped == moved and s.control.settled_at == s.step
    assert s.sn.arch.argmax() == expected and s.budget.lo <= s.cost.of(expected) <= s.budget.hi
    for i, (t, t0, m0) in enumerate(zip(s.sn.arch.logits, logits, moments)):
        perm = list(range(len(t)))
        perm[start[i]], perm[expected[i]] = expected[i], start[i]
        assert torch.equal(t.detach(), t0[perm]) and torch.equal(s.a_opt.state[t]["exp_avg"], m0[perm])
    assert s.state()["settle_snapped"] == moved and s.control.guarding()
    assert s.finish().search["settle_snapped"] == moved


@pytest.mark.parametrize("outside", [False, True])
def test_a_guarded_step_that_leaves_the_band_is_undone(tmp_path, outside):
    """settle_until "guarded": after the landing an architecture step whose argmax leaves the band
    is undone (logits and optimizer moments as before it); one that stays in the band is kept."""
    import torch

    from dan.search import Searcher

    cfg = tiny_config(str(tmp_path / "s"), **{"search.budget_flops": "30%", "search.settle_until": "guarded"})
    s = Searcher(cfg, monitor=Monitor(None))
    s.step = s.total_steps - 1
    s.control.settled_at = s.step - 1  # landed
    x, y = next(iter(s.data.holdout))
    s.cost.over = lambda choice: 1.0  # the argmax in the band
    s.arch_step(s.prep(x), y, 0.9, 0.1)  # a first step, kept: the optimizer has moments
    assert s.control.undone == 0
    before = [p.detach().clone() for p in s.sn.arch.parameters()]
    moments = {k: v.clone() for k, v in s.a_opt.state[next(iter(s.sn.arch.parameters()))].items()}
    s.cost.over = lambda choice: 1.5 if outside else 1.0
    s.arch_step(s.prep(x), y, 0.9, 0.1)
    after = list(s.sn.arch.parameters())
    same = all(torch.equal(a, b) for a, b in zip(before, after))
    assert same == outside and s.control.undone == int(outside)
    state = s.a_opt.state[after[0]]
    assert all(torch.equal(state[k], v) for k, v in moments.items()) == outside
    assert s.state()["settle_undone"] == int(outside)


def test_suite_runner_restarts_a_run_killed_before_its_first_checkpoint(tmp_path):
    """Found continuing the suite: a retrain killed before its first checkpoint left events and an
    empty metrics.jsonl, which the tools rightly refuse to start over; the runner clears it."""
    from dan import suite

    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    (out / "events.out.tfevents.1.vm.1.0").write_bytes(b"")
    run = suite.Run("k", 0, "train", ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                                      "--epochs", "1", "--limit-batches", "1", "--quiet", "--no-tensorboard",
                                      "--set", "model.args.width=8", "--set", "train.latency_batches=[1]",
                                      "--out", str(out)], str(out))
    lines = []
    suite.run([run], log=lines.append)
    assert run.done and (out / "summary.json").is_file()
    assert any(l.startswith("[restart]") for l in lines)
    # through the library's entry point, not tools/
    assert any(l.startswith("[run]") and " -m dan train --dataset synthetic" in l for l in lines), lines


def _coarse_and_fine(s):
    """Put the searcher ``s``'s argmax in the middle of every group's candidates and its budget where
    the band is as wide as the median one-candidate move; returns (that argmax, the coarse groups:
    those with a move at least that wide), checked to be some of the groups, not none or all."""
    import torch

    with torch.no_grad():
        for t in s.sn.arch.logits:
            t.zero_()[len(t) // 2] = 1.0
    choice = s.sn.arch.argmax()
    base = s.cost.of(choice)
    moves = [max(abs(s.cost.of(choice[:i] + [j] + choice[i + 1:]) - base) for j in (c - 1, c + 1))
             for i, c in enumerate(choice)]
    width = sorted(moves)[len(moves) // 2]
    s.budget.value = width / (2 * s.cfg.search.band)
    coarse = {i for i, d in enumerate(moves) if d >= width}
    assert 0 < len(coarse) < len(choice)  # this budget has both kinds
    return choice, coarse


def test_settle_fine_keeps_the_penalty_off_groups_that_could_jump_the_band(tmp_path):
    """search.settle_fine: in the settle phase the groups one of whose one-candidate moves costs at
    least the band's width (2·band·B) get no gradient from the cost penalty, the others do; outside
    the settle phase, or with the option off, every group does."""
    import torch

    from dan.search import Searcher, penalty_frozen

    cfg = tiny_config(str(tmp_path / "s"), **{"search.budget_flops": "30%", "search.settle_fine": True,
                                              "search.settle_vernier": 1.0})
    s = Searcher(cfg, monitor=Monitor(None))
    choice, coarse = _coarse_and_fine(s)
    s.step = s.total_steps - 1
    assert s.control.settling(s.step) and penalty_frozen(s) == coarse
    grads = torch.autograd.grad(s.cost.expected_over(penalty_frozen(s)), s.sn.arch.logits, allow_unused=True)
    for i, g in enumerate(grads):
        assert (g is None or not g.abs().sum()) if i in coarse else g.abs().sum() > 0
    s.step = 0
    assert penalty_frozen(s) == set()
    s.step = s.total_steps - 1
    s.cfg.search.settle_fine = False
    assert penalty_frozen(s) == set()
    s.budget.value = 1.0  # every move costs more than the band: none is singled out
    assert s.cost.coarse_groups(choice, cfg.search.band) == set()


def test_settle_hold_moves_no_logit_of_a_group_the_penalty_does_not_reach(tmp_path):
    """search.settle_hold: an architecture step leaves the logits (and Adam's moments) of the groups
    the penalty does not reach as they were, and moves the others; without it every group moves."""
    import torch

    from dan.search import Searcher, penalty_frozen

    def step(hold: bool):
        cfg = tiny_config(str(tmp_path / f"s{hold}"), **{"search.budget_flops": "30%", "search.settle_fine": True,
                                                         "search.settle_vernier": 1.0, "search.settle_hold": hold})
        s = Searcher(cfg, monitor=Monitor(None))
        _, coarse = _coarse_and_fine(s)
        s.step = s.total_steps - 1
        held = penalty_frozen(s)
        assert held == coarse
        before = [t.detach().clone() for t in s.sn.arch.logits]
        x, y = next(iter(s.data.train))
        s.arch_step(s.prep(x), y, 1.0, 0.1)
        moved = {i for i, (a, t) in enumerate(zip(before, s.sn.arch.logits)) if not torch.equal(a, t.detach())}
        return held, moved, s

    held, moved, s = step(True)
    assert moved == set(range(len(s.sn.arch.logits))) - held
    assert not any(s.a_opt.state.get(s.sn.arch.logits[i]) for i in held)  # no moments either
    held, moved, s = step(False)
    assert moved == set(range(len(s.sn.arch.logits)))


def test_settle_hold_above_holds_only_while_the_argmax_is_above_the_band(tmp_path):
    """search.settle_hold_while=above: past the deadline the groups the penalty does not reach are
    held at a step whose argmax costs more than the band's upper edge (as with "always"), and free
    at one whose argmax is inside or below the band (where "always" still holds them)."""
    import torch

    from dan.search import Searcher, held_groups, penalty_frozen

    def searcher(when: str):
        cfg = tiny_config(str(tmp_path / when), **{"search.budget_flops": "30%", "search.settle_fine": True,
                                                   "search.settle_vernier": 1.0, "search.settle_hold": True,
                                                   "search.settle_hold_while": when})
        s = Searcher(cfg, monitor=Monitor(None))
        _coarse_and_fine(s)
        s.step = s.total_steps - 1
        return s

    s = searcher("above")
    frozen = penalty_frozen(s)
    assert frozen and s.cost.of(s.sn.arch.argmax()) > s.budget.hi  # the set-up: above the band
    before = [t.detach().clone() for t in s.sn.arch.logits]
    x, y = next(iter(s.data.train))
    s.arch_step(s.prep(x), y, 1.0, 0.1)
    moved = {i for i, (a, t) in enumerate(zip(before, s.sn.arch.logits)) if not torch.equal(a, t.detach())}
    assert moved == set(range(len(before))) - frozen
    for value in (s.cost.of(s.sn.arch.argmax()), 10 * s.cost.of(s.sn.arch.argmax())):  # in, below the band
        s.budget.value = value
        assert held_groups(s, frozen) == set()
        always = searcher("always")
        always.budget.value = value
        assert held_groups(always, frozen) == frozen


def test_a_new_generation_of_the_default_search_has_its_own_folders_and_the_other_is_still_reported(tmp_path):
    """The 6-epoch default search: its runs live in their own folder under each budget (a finished run
    is recorded by its folder, so the 3-epoch runs are not mistaken for its own), every retrain keeps
    the suite's 3 epochs, uniform and random widths are shared, the long-supernet ablation (what the
    generation now does by default) is not planned; the page shows the other generation below."""
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    root = str(tmp_path / "suite")
    kw = dict(seeds=2, recipes=("inherit",), budgets=["flops25"])
    new = search_suite.plan(root, generation="6-epoch", ablations=("long-supernet", "refine"), **kw)
    old = search_suite.plan(root, generation="3-epoch", ablations=False, **kw)
    by = lambda rs, key: [r for r in rs if r.key == key]  # noqa: E731
    assert not by(new, "flops25/ablation long-supernet search")  # it is this generation's default
    for r in by(new, "flops25/dan search"):
        assert r.out == os.path.join(root, "flops25", "search6", f"dan-search-s{r.seed}")
        assert "train.epochs=6" in r.args and "search.warmup_epochs=2" in r.args
    for r in new:
        if r.tool == "retrain":
            assert r.args[r.args.index("--epochs") + 1] == "3", r.key  # greedy's, refine's arch.json hold 6
            assert os.path.dirname(r.out) == os.path.join(root, "flops25", "search6"), r.out
    assert by(new, "flops25/uniform arch")[0].out == by(old, "flops25/uniform arch")[0].out
    assert [r.out for r in by(new, "flops25/random arch")] == [r.out for r in by(old, "flops25/random arch")]
    assert by(new, "flops25/ablation refine arch")[0].after == [by(new, "flops25/dan search")[0].out]
    assert all("--epochs" not in r.args for r in old)  # the 3-epoch generation's runs as they were made
    assert not {r.out for r in new if r.kind != "arch" or "greedy" in r.key} & {r.out for r in old}
    for rs, dan in ((new, [0.90, 0.91]), (old, [0.85, 0.86])):
        for r in rs:
            if r.kind in ("search", "arch"):
                _fake_arch(r)
            elif r.key == "flops25/dan inherited":
                _fake_retrain(r, dan[r.seed], 1_800_000)
            elif not r.key.startswith("flops25/ablation"):
                _fake_retrain(r, 0.88, 1_800_000)
    text = search_page.write_report(new, str(tmp_path / "search.md"), str(tmp_path / "fig"), "Settings.",
                                     {"3-epoch": old})
    head, other = text.split("## The 3-epoch search, not the default")
    assert "| dan | 90.50 ± 0.71 |" in head and "| dan | 85.50 ± 0.71 |" in other
    assert "### Top-1 at equal cost" in other and "\n## Top-1" not in other
    assert "DAN searches for 6 epochs (2 weight-only)" in search_page.settings_text(2, "6-epoch")
    assert "retrained by `tools/retrain.py` for 3 epochs" in search_page.settings_text(2, "6-epoch")


def test_the_schedule_of_a_plan_counts_the_waits_the_runner_makes():
    """Two lanes, runs started in plan order once their inputs are made (as ``--jobs 2`` starts
    them): a retrain that needs a search waits for it even with a lane free."""
    from dan.suite.plan import Run
    from dan.suite.run import schedule_seconds

    search = lambda s: Run("dan search", s, "search", [], f"/x/search-s{s}", kind="search")
    retrain = lambda s: Run("dan inherited", s, "retrain", [], f"/x/inherit-s{s}", after=[f"/x/search-s{s}"])
    took = {"search": 600.0, "inherit": 300.0}
    secs = lambda r: took[os.path.basename(r.out).split("-")[0]]
    # one seed: the retrain cannot start beside its own search (900 s, not (600 + 300) / 2)
    assert schedule_seconds([search(0), retrain(0)], secs) == 900.0
    # two seeds: both searches run at once, then both retrains: 900 s, the summed time over two
    runs = [search(0), retrain(0), search(1), retrain(1)]
    assert schedule_seconds(runs, secs) == 900.0
    # one lane: everything in turn
    assert schedule_seconds(runs, secs, jobs=1) == 1800.0
    # a run whose input no run makes and that is not made: said, not an endless loop
    with pytest.raises(ValueError, match="waits for"):
        schedule_seconds([retrain(0), Run("x", 0, "retrain", [], "/x/search-s0", after=["/x/inherit-s0"])], secs)


def test_a_recorded_greedy_architecture_is_restored_for_a_scratch_retrain(tmp_path):
    """Greedy's widths come from its search's supernet: with both folders gone, a retrain of them
    from scratch restores greedy's arch.json from the ledger instead of searching again (which on
    another machine gives another answer and supersedes the seed's records). The plan wires it so,
    and the restore uses the search's flags (the config greedy's arch.json carries); a random
    architecture's restore drops only its method. Once a run of the plan needs the search's
    checkpoint (an inherited retrain), the search is made again and greedy with it: not restored
    from a record the new search supersedes."""
    import shutil

    from dan.suite import search as search_suite
    from dan.suite.ledger import Ledger
    from dan.suite.run import needed_folders, restore, restore_command

    root = tmp_path / "suite"

    def planned(recipes):
        runs = search_suite.plan(str(root), seeds=1, ablations=False, budgets=["flops25"],
                                 methods=("random", "greedy"), recipes=recipes)
        return runs, {r.key: r for r in runs}

    runs, by = planned(("scratch",))
    archs = [by["flops25/dan search"], by["flops25/greedy arch"], by["flops25/random arch"]]
    for r in archs:
        _fake_arch(r)
    ledger = Ledger(str(tmp_path / "search-runs.json"), str(root))
    ledger.record(archs)
    shutil.rmtree(root)
    make, restored = needed_folders(runs, ledger)
    assert make == [by["flops25/random"], by["flops25/greedy"]]
    assert restored == [by["flops25/random arch"], by["flops25/greedy arch"]]

    def flags(cmd):
        assert cmd[2:5] == ["dan", "baseline", "fixed"] and cmd[-2:] == ["--out", cmd[-1]]
        return cmd[5:cmd.index("--widths")]

    search_args = by["flops25/dan search"].args
    printed = restore_command(by["flops25/greedy arch"], runs)  # what --dry-run shows: writes nothing
    assert not os.path.exists(by["flops25/greedy arch"].out)
    assert restore(by["flops25/greedy arch"], ledger, runs) == printed
    assert flags(printed) == search_args[:search_args.index("--out")]
    random_args = by["flops25/random arch"].args
    assert flags(restore(by["flops25/random arch"], ledger, runs)) == random_args[1:random_args.index("--out")]
    with pytest.raises(dan.UserError, match="supernet came from"):
        restore(by["flops25/greedy arch"], ledger, [])

    runs, by = planned(("scratch", "inherit"))
    make, restored = needed_folders(runs, ledger)
    assert by["flops25/dan search"] in make and by["flops25/greedy arch"] in make
    assert restored == [by["flops25/random arch"]]


def test_the_runner_restores_a_greedy_architecture_with_a_real_baseline_fixed(tmp_path, monkeypatch):
    """End to end: a recorded greedy architecture whose folder and search folder are gone is
    written again by ``baseline fixed`` (a real one) with its recorded widths and small network;
    neither the search nor greedy runs, and the records stay as they were."""
    import shutil
    import sys

    from dan.suite.ledger import Ledger
    from dan.suite.plan import RESTORED, Run
    from dan.suite.run import run as run_suite

    root = tmp_path / "suite"
    flags = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--set", "model.args.width=8",
             "--quiet", "--budget-flops", "30%"]
    search = Run("flops10/dan search", 0, "search", flags + ["--out", str(root / "dan-search-s0")],
                 str(root / "dan-search-s0"), kind="search")
    g = str(root / "greedy-arch-s0")
    greedy = Run("flops10/greedy arch", 0, "baseline",
                 ["greedy", "--supernet", os.path.join(search.out, "checkpoints", "last.pt"), "--quiet", "--out", g],
                 g, kind="arch", after=[search.out])
    scratch = Run("flops10/greedy", 0, "retrain", [], str(root / "greedy-s0"), after=[g], arch_only=[g])
    # greedy's answer: a real arch.json of this network at that budget (narrower than uniform's)
    assert run_tool("baseline.py", "random", "--seed", "3", *flags, "--out", g).returncode == 0
    with open(os.path.join(g, "arch.json")) as f:
        arch = json.load(f)
    _fake_arch(search)
    ledger = Ledger(str(tmp_path / "search-runs.json"), str(root))
    ledger.record([search, greedy])
    recorded = json.dumps(ledger.runs, sort_keys=True)
    shutil.rmtree(root)
    summary = json.dumps({"networks": {"small": {"top1": 0.8, "flops": 1, "params": 1}}})
    script = ("import os, sys; out = sys.argv[1]; os.makedirs(out, exist_ok=True); "
              "open(os.path.join(out, 'summary.json'), 'w').write(sys.argv[2])")
    monkeypatch.setattr(Run, "command", lambda self: [sys.executable, "-c", script, self.out, summary])
    lines: list = []
    run_suite([search, greedy, scratch], log=lines.append, ledger=ledger)
    assert any(line.startswith(f"[restore] {g}") for line in lines)
    assert [line for line in lines if line.startswith("[run]")] == [f"[run] {' '.join(scratch.command())}"]
    with open(os.path.join(g, "arch.json")) as f:
        restored = json.load(f)
    assert restored["widths"] == arch["widths"] and restored["small"] == arch["small"]
    assert os.path.isfile(os.path.join(g, RESTORED)) and not greedy.done and not os.path.exists(search.out)
    assert ledger.done(scratch) and json.dumps(
        {k: v for k, v in ledger.runs.items() if k != "greedy-s0"}, sort_keys=True) == recorded


def test_the_runner_holds_its_folder_keeps_what_is_not_a_runs_and_says_why_a_run_failed(tmp_path):
    # an audit: a second runner on the same --out cleared the first's live run folder; a folder at a
    # planned path holding a user's notes was deleted; a failed run said only "see its .log"; a
    # SIGINT to the runner alone left its run training
    import fcntl
    import importlib
    import subprocess
    import sys

    from dan import suite

    runner = importlib.import_module("dan.suite.run")  # (dan.suite.run is also the function's name)

    out = tmp_path / "suite" / "r"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    args = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--epochs", "1",
            "--limit-batches", "1", "--quiet", "--no-tensorboard", "--set", "model.args.width=8", "--out", str(out)]
    bad = suite.Run("k", 0, "train", args, str(out), root=str(tmp_path / "suite"))
    with pytest.raises(dan.UserError, match="holds notes.txt, which no run writes"):
        suite.run([bad], log=lambda line: None)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    fd = os.open(str(tmp_path / "suite" / runner.SUITE_LOCK), os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another runner
    try:
        with pytest.raises(dan.UserError, match="in use by another reproduce.py"):
            suite.run([bad], log=lambda line: None)
    finally:
        os.close(fd)
    failing = suite.Run("k", 0, "train", args[:-2] + ["--set", "train.lr=-1", "--out", str(out)], str(out),
                        root=str(tmp_path / "suite"))
    with pytest.raises(dan.UserError, match=r"run failed \(exit 2\): config key 'train.lr' must be"):
        suite.run([failing], log=lambda line: None)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    log = open(tmp_path / "child.log", "w")
    runner._stop_children([(None, child, log, 0.0)])
    assert child.returncode is not None and log.closed


def test_two_runners_on_one_ledger_keep_each_others_records_and_a_broken_ledger_is_one_line(tmp_path):
    # each runner loaded the ledger once and the last save dropped the other's records; a truncated
    # ledger (or a merge conflict in it) was a traceback
    from dan.suite.ledger import Ledger

    path = str(tmp_path / "search-runs.json")
    a, b = Ledger(path, str(tmp_path)), Ledger(path, str(tmp_path))
    a.runs["flops25/dan-search-s0"] = {"arch": {"widths": {"conv1": 4}}}
    a.save()
    b.runs["flops50/dan-search-s0"] = {"arch": {"widths": {"conv1": 8}}}
    b.elapsed["x"] = 3.0
    b.save()
    again = Ledger(path, str(tmp_path))
    assert set(again.runs) == {"flops25/dan-search-s0", "flops50/dan-search-s0"} and again.elapsed == {"x": 3.0}
    for text in ('{"version": 1, "runs": {', '{"version": 1, "runs": []}'):
        (tmp_path / "search-runs.json").write_text(text)
        with pytest.raises(dan.UserError, match="search-runs.json is not a"):
            Ledger(path, str(tmp_path))
