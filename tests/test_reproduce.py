"""The suite runner's command (tools/reproduce.py = dan reproduce), as an audit found it: where its
page and ledger go, what its dry run says, the flags it refuses, smoke-size runs; and the suite
modules behind it (dan/suite/): corrupt files, superseded records, one-seed verdicts."""

import hashlib
import os

import pytest

from tests.helpers import ROOT, assert_user_error, run_tool


def _digest(path: str) -> str:
    with open(os.path.join(ROOT, path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_suite_under_another_out_writes_its_page_and_ledger_there_not_in_docs(tmp_path):
    # a smoke suite run from the repository with --out /tmp/x wrote over docs/search.md and the
    # committed ledger docs/search-runs.json (and docs/results.md)
    from dan.cli.reproduce import page_path

    committed = {p: _digest(p) for p in ("docs/search.md", "docs/search-runs.json", "docs/results.md")}
    for suite, page in (("search", "search.md"), ("fashion-mnist", "results.md")):
        out = tmp_path / suite
        p = run_tool("reproduce.py", "--suite", suite, "--report-only", "--out", str(out), "--seeds", "1")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().endswith(f"results: {out / page}") and (out / page).is_file()
    assert (tmp_path / "search" / "search-runs.json").is_file()
    assert {p: _digest(p) for p in committed} == committed
    # the default command still reads (and writes) the committed ledger: its dry run counts its records
    p = run_tool("reproduce.py", "--suite", "search", "--dry-run", "--no-ablations")
    assert p.returncode == 0, p.stderr
    assert "recorded in docs/search-runs.json" in p.stdout.splitlines()[-1]
    assert page_path("search", "runs/suite-search", None) == "docs/search.md"
    assert page_path("search", os.path.abspath("runs/suite-search"), None) == "docs/search.md"
    assert page_path("fashion-mnist", "runs/suite-fashion-mnist", None) == "docs/results.md"
    assert page_path("cifar100", "runs/suite-cifar100", None) == os.path.join("runs/suite-cifar100", "results.md")
    assert page_path("search", "/tmp/x", "docs/search.md") == "docs/search.md"  # given: as given
    # a review: the committed records are not seen from another --out's empty ledger: said, with the fix
    p = run_tool("reproduce.py", "--suite", "search", "--dry-run", "--no-ablations", "--out", str(tmp_path / "o"))
    assert p.returncode == 0 and "recorded in docs/search-runs.json" in p.stdout.splitlines()[0], p.stdout[:500]
    assert "--results docs/search.md" in p.stdout.splitlines()[0]


def _fake_arch(run, widths=4, weights=None):
    """A finished search or width baseline: its arch.json (and a search's checkpoint, ``weights``)."""
    import json

    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "arch.json"), "w") as f:
        json.dump({"widths": {"g": widths}, "candidates": {"g": [2, 4, 8]}, "repaired": [],
                   "search": {"argmax_before_repair": {"over_budget": 1.0, "in_band": True}, "mean_max_prob": 0.8}}, f)
    if weights is not None:
        os.makedirs(os.path.join(run.out, "checkpoints"), exist_ok=True)
        with open(os.path.join(run.out, "checkpoints", "last.pt"), "wb") as f:
            f.write(weights)


def _fake_retrain(run, top1=0.88):
    import json

    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "summary.json"), "w") as f:
        json.dump({"networks": {"small": {"top1": top1, "flops": 700_000, "params": 1000, "latency_ms": {"1": 1.0}}}}, f)


def test_a_search_made_again_supersedes_the_records_built_on_it_planned_or_not(tmp_path):
    # the ledger looked only at the runs the command planned: a search made again with other widths
    # under --methods dan --recipe inherit left greedy's and the scratch rows' records from the old
    # answer in the tables; and a search made again on the same widths (other weights) dropped the
    # scratch retrains, which read only its widths
    import shutil

    from dan.suite import search as search_suite
    from dan.suite.ledger import Ledger

    out = str(tmp_path / "suite")
    full = search_suite.plan(out, seeds=2, ablations=False, budgets=["flops10"])
    for r in full:
        if r.kind in ("search", "arch"):
            _fake_arch(r, weights=b"old" if r.kind == "search" else None)
        else:
            _fake_retrain(r)
    path = str(tmp_path / "search-runs.json")
    first = Ledger(path, out)
    assert first.record(full) == []
    first.save()
    recorded = set(first.runs)
    shutil.rmtree(out)  # another machine: the folders are gone, the records stay
    kw = dict(ablations=False, budgets=["flops10"], methods=("dan",), recipes=("inherit",))
    planned = search_suite.plan(out, seeds=2, **kw)
    s0 = next(r for r in planned if r.kind == "search" and r.seed == 0)
    s1 = next(r for r in planned if r.kind == "search" and r.seed == 1)
    _fake_arch(s0, widths=8, weights=b"new")  # seed 0: made again, other widths
    _fake_arch(s1, weights=b"new")  # seed 1: the same widths, other weights
    ledger = Ledger(path, out)
    ledger.related = search_suite.related_runs(out, planned)
    dropped = set(ledger.record(planned))
    stale0 = {f"flops10/search6/{m}-s0" for m in ("dan", "dan-inherit", "greedy-arch", "greedy", "greedy-inherit",
                                                  "uniform-inherit", "random-inherit")}
    # seed 1's weights only: every inherited row and greedy (ranked on the supernet), not the scratch rows
    stale1 = {f"flops10/search6/{m}-s1" for m in ("dan-inherit", "greedy-arch", "greedy", "greedy-inherit",
                                                  "uniform-inherit", "random-inherit")}
    assert dropped == stale0 | stale1
    kept = recorded - dropped
    assert {"flops10/search6/dan-s1", "flops10/search6/uniform-s0", "flops10/search6/random-s1",
            "flops10/uniform-arch", "flops10/random-arch-s0"} <= kept
    assert set(ledger.runs) == kept and set(ledger.superseded) == dropped


_SEARCH = ("--suite", "search", "--seeds", "1", "--budgets", "flops10", "--methods", "dan", "--recipe", "inherit",
           "--no-ablations")


@pytest.mark.parametrize("where, text, said", [
    ("search/dan-inherit-s0/summary.json", '{"networks": {"small": {"top1": 0.9', "is not valid JSON"),
    ("search/dan-inherit-s0/summary.json", "[1, 2]", "has no object 'networks'"),
    ("search/dan-inherit-s0/summary.json", '{"networks": {"small": {"top1": "high", "flops": 1, "params": 1}}}',
     "'networks.small.top1' is not a number"),
    ("search/dan-inherit-s0/summary.json", '{"networks": {"big": {"top1": 0.9}}}', "has no network 'small'"),
    ("search/dan-search-s0/arch.json", '{"widths": {"g": 4}, "cand', "is not valid JSON"),
    ("search/dan-search-s0/arch.json", '{"widths": [4]}', "'widths' is not an object of channel counts"),
    ("search/dan-search-s0/arch.json", '{"widths": {"g": 4}, "search": {"mean_max_prob": "0.8"}}',
     "'search.mean_max_prob' is not a number"),
    ("search/dan-inherit-s0/init_from.json", '{"sha256": 5}', "not an object with a text 'sha256'"),
    ("search/dan-inherit-s0/suite_time.json", '{"seconds": "ten"}', "not an object with a number 'seconds'"),
    ("suite_elapsed.json", '{"sec', "is not valid JSON"),
])
def test_a_corrupt_run_folder_file_is_one_line_naming_it_and_the_fix(tmp_path, where, text, said):
    # a truncated or hand-edited file of a run folder ended the page (and the runner) in a traceback
    from dan.errors import UserError
    from dan.suite import search as search_suite
    from dan.suite import search_report as search_page

    out = str(tmp_path / "suite")
    runs = search_suite.plan(out, seeds=1, ablations=False, budgets=["flops10"], methods=("dan",),
                             recipes=("inherit",))
    search, retrain = runs
    _fake_arch(search)
    _fake_retrain(retrain)
    path = os.path.join(out, where.replace("search/", "flops10/search6/"))
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(UserError) as e:
        search_page.write_report(runs, str(tmp_path / "search.md"), str(tmp_path / "fig"), "Settings.")
    message = str(e.value)
    assert "\n" not in message and path in message and said in message, message
    fix = "delete it" if where.endswith(("suite_time.json", "suite_elapsed.json")) else \
        f"move the run folder {os.path.dirname(path)} away"
    assert fix in message, message
    if where == "search/dan-inherit-s0/summary.json" and said == "is not valid JSON":  # as a user meets it
        p = run_tool("reproduce.py", *_SEARCH, "--out", out, "--report-only")
        assert_user_error(p, path, "is not valid JSON", "move the run folder")


@pytest.mark.parametrize("record, said", [
    ({"label": "flops10/dan inherited", "seconds": 60.0}, "neither an object 'small'"),
    ({"small": {"top1": "0.9", "flops": 1, "params": 1}}, "'small.top1' is not a number"),
    ({"small": {"top1": 0.9, "flops": 1, "params": 1, "latency_ms": [1.0]}}, "'small.latency_ms' is not an object"),
    ({"arch": {"candidates": {"g": [2, 4]}}}, "'arch.widths' is not an object of channel counts"),
    ({"small": {"top1": 0.9, "flops": 1, "params": 1}, "seconds": "1 h"}, "'seconds' is not a number"),
    ([0.9], "not an object"),
])
def test_a_hand_edited_ledger_record_is_one_line_naming_it(tmp_path, record, said):
    import json

    from dan.errors import UserError
    from dan.suite.ledger import Ledger

    path = tmp_path / "search-runs.json"
    path.write_text(json.dumps({"version": 1, "elapsed": {}, "runs": {"flops10/search6/dan-inherit-s0": record}}))
    with pytest.raises(UserError) as e:
        Ledger(str(path), str(tmp_path))
    message = str(e.value)
    assert "\n" not in message and said in message, message
    # (restored from a copy: git tracks no ledger here; it told a smoke suite's to use git checkout)
    assert f"{path}: the record 'flops10/search6/dan-inherit-s0'" in message and "from a copy of it" in message
    if said.startswith("neither"):  # as a user meets it: the dry run reads the ledger too
        p = run_tool("reproduce.py", *_SEARCH, "--out", str(tmp_path), "--dry-run")
        assert_user_error(p, "the record 'flops10/search6/dan-inherit-s0'", "delete that entry")


def test_a_corrupt_file_of_the_fashion_mnist_suite_is_one_line(tmp_path):
    from dan.errors import UserError
    from dan.suite import plan, write_results

    runs = plan("fashion-mnist", str(tmp_path / "suite"), seeds=1)
    std = next(r for r in runs if r.key == "standard")
    os.makedirs(std.out)
    with open(os.path.join(std.out, "metrics.jsonl"), "w") as f:
        f.write('{"val/ce_big": 0.5}\n{"val/ce_b')  # cut mid-line
    with pytest.raises(UserError, match=r"metrics.jsonl line 2 is not JSON .*: move the run folder"):
        write_results(runs, str(tmp_path / "r.md"), str(tmp_path / "fig"), "# R")
    os.remove(os.path.join(std.out, "metrics.jsonl"))
    with open(os.path.join(std.out, "summary.json"), "w") as f:  # a network without its latencies
        f.write('{"method": "standard", "networks": {"model": {"top1": 0.9, "flops": 1, "params": 1, '
                '"nonzero_params": 1}, "small": {"top1": 0.9, "flops": 1, "params": 1, "nonzero_params": 1}}}')
    with pytest.raises(UserError, match=r"summary.json: 'networks.\w+.latency_ms' is not an object of numbers"):
        write_results(runs, str(tmp_path / "r.md"), str(tmp_path / "fig"), "# R")


def test_the_dry_run_says_which_runs_are_resumed_and_which_folders_are_cleared(tmp_path):
    # every unfinished run was "[todo]": a half-done run (resumed from its checkpoint) and a folder
    # killed before its first checkpoint (cleared by the runner) looked like new runs
    out = tmp_path / "suite"
    gen = out / "flops10" / "search6"
    (gen / "dan-search-s0" / "checkpoints").mkdir(parents=True)
    (gen / "dan-search-s0" / "checkpoints" / "last.pt").write_bytes(b"")
    (gen / "dan-inherit-s0").mkdir()
    (gen / "dan-inherit-s0" / "metrics.jsonl").write_text("")
    (out / "flops10" / "uniform-arch").mkdir()
    (out / "flops10" / "uniform-arch" / "notes.txt").write_text("mine")  # not the suite's to clear
    p = run_tool("reproduce.py", "--suite", "search", "--seeds", "1", "--budgets", "flops10", "--methods", "dan,uniform",
                 "--no-ablations", "--out", str(out), "--dry-run")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    state = {l.split("] ", 1)[1].split(" seed ")[0].strip(): l for l in lines if l.startswith("[")}
    assert state["flops10/dan search"].startswith("[resume]") and state["flops10/dan search"].endswith(" --resume")
    assert state["flops10/dan inherited"].startswith("[clear]") and "killed before its first checkpoint" in \
        state["flops10/dan inherited"]
    assert state["flops10/uniform arch"].startswith("[clear]") and "the runner will stop here" in \
        state["flops10/uniform arch"] and "holds notes.txt" in state["flops10/uniform arch"]
    assert state["flops10/uniform inherited"].startswith("[todo]")
    assert lines[-1] == ("4 runs: 1 to make, 1 to resume from their last checkpoint, 2 to clear and start again "
                         "(killed before their first checkpoint, or restored)")
    assert (out / "flops10" / "uniform-arch" / "notes.txt").read_text() == "mine"  # a dry run changes nothing


def test_a_one_seed_page_draws_no_verdict_and_says_when_the_runs_saw_part_of_the_data(tmp_path):
    # a page of one seed said "supported (one seed)" for any positive difference, and called runs
    # limited to a few batches "the full training split"
    import json

    from dan.report import ONE_SEED, verdict
    from dan.suite import plan, suite_settings, write_results
    from dan.suite.search_report import settings_text

    assert verdict([0.9], [0.8, 0.81], True, 0.0)[2] == ONE_SEED and verdict([0.9], [0.8], True, 0.0)[2] == ONE_SEED
    runs = plan("fashion-mnist", str(tmp_path / "suite"), seeds=1)
    net = {"top1": 0.9, "flops": 1, "params": 1, "nonzero_params": 1, "latency_ms": {"1": 1.0, "64": 2.0}}
    for r in runs:
        if r.key in ("adjoint a=4", "small alone (a=4 net)"):
            os.makedirs(r.out)
            with open(os.path.join(r.out, "summary.json"), "w") as f:
                json.dump({"method": "adjoint" if r.key == "adjoint a=4" else "standard",
                           "networks": {"small": dict(net, top1=0.9 if r.key == "adjoint a=4" else 0.8)}}, f)
    text = write_results(runs, str(tmp_path / "r.md"), str(tmp_path / "fig"), "# R")
    claim = [l for l in text.splitlines() if l.startswith("| The adjoint-trained small network beats the same")][0]
    assert claim.endswith(f"| +10.00 | {ONE_SEED} |") and "supported" not in claim
    assert "full training split" in suite_settings("fashion-mnist", 1)
    limited = suite_settings("fashion-mnist", 1, sets=("train.limit_batches=2", "train.epochs=1"))
    assert "full training split" not in limited and "only part of each split: at most 2 batches" in limited
    assert "1 epoch per run" in limited and "1 seed (0) per method" in limited and "1 epochs" not in limited
    assert "3 epochs per run" in suite_settings("fashion-mnist", 4) and "4 seeds (0, 1, 2, …)" in suite_settings(
        "fashion-mnist", 4)
    assert "the full 60k training images" in settings_text(1)
    limited = settings_text(1, sets=("train.limit_batches=2",))
    assert "full 60k" not in limited and "at most 2 batches per epoch of the 60k training images (only part" in limited
    assert "DAN searches for 1 epoch " in settings_text(1, sets=("train.epochs=1", "search.warmup_epochs=0"))


@pytest.mark.parametrize("args, said", [
    (("--methods", ""), "--methods is empty"),
    (("--budgets", ""), "--budgets is empty"),
    (("--ablations", ""), "--ablations is empty"),
    (("--methods", "dan,,uniform"), "has an empty name"),
    (("--out", ""), "--out is empty"),
])
def test_an_empty_list_is_refused_not_read_as_all(tmp_path, args, said):
    # `--methods ""` (a shell variable left empty) planned every method, `--ablations ""` every ablation
    out = () if args[0] == "--out" else ("--out", str(tmp_path / "suite"))
    p = run_tool("reproduce.py", "--suite", "search", *out, *args, "--dry-run")
    assert_user_error(p, said)
    if args == ("--budgets", ""):  # given to another suite it is refused too (it was ignored)
        p = run_tool("reproduce.py", "--suite", "fashion-mnist", "--out", str(tmp_path / "f"), *args, "--dry-run")
        assert_user_error(p, "--budgets is for the search suite")


def test_smoke_flags_reach_every_run_and_keep_its_runs_page_and_ledger_apart(tmp_path):
    # reproduce.py had no smoke-size flags; a run made with them must not be taken for a full run's
    # folder or record (a 1-epoch summary.json in the suite's folder would be "finished")
    out = tmp_path / "suite"
    smoke = ("--epochs", "1", "--set", "search.warmup_epochs=0", "--set", "train.limit_batches=2")
    base = ("--suite", "search", "--seeds", "1", "--budgets", "flops10", "--no-ablations", "--out", str(out))
    full = run_tool("reproduce.py", *base, "--dry-run")
    small = run_tool("reproduce.py", *base, *smoke, "--dry-run")
    assert full.returncode == 0 and small.returncode == 0, small.stderr
    listed = lambda p: [l for l in p.stdout.splitlines() if l.startswith("[")]  # noqa: E731
    assert len(listed(small)) == len(listed(full)) == 8  # 4 widths, 4 inherited retrains
    folder = small.stdout.splitlines()[0].rsplit(" in ", 1)[1]
    assert os.path.dirname(folder) == str(out) and os.path.basename(folder).startswith("smoke-")
    flags = "--set train.epochs=1 --set search.warmup_epochs=0 --set train.limit_batches=2"
    for plain, line in zip(listed(full), listed(small)):
        where = plain.rsplit(" --out ", 1)[1]
        # the same command with the overrides last (they win over a search generation's epochs), in its own folder
        assert line == plain.replace(str(out), folder).replace(" --out ", f" {flags} --out "), (plain, line)
        assert line.rsplit(" --out ", 1)[1] == where.replace(str(out), folder) != where
    again = run_tool("reproduce.py", *base, *smoke, "--dry-run")
    assert again.stdout == small.stdout  # the same flags, the same folder: a smoke suite resumes
    p = run_tool("reproduce.py", *base, *smoke, "--report-only")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith(f"results: {folder}/search.md")
    page = open(os.path.join(folder, "search.md")).read()
    assert "**Smoke runs, not the suite's:**" in page and "at most 2 batches per epoch" in page
    assert os.path.isfile(os.path.join(folder, "search-runs.json")) and not (out / "search-runs.json").exists()
    assert_user_error(run_tool("reproduce.py", *base, *smoke, "--results", str(tmp_path / "s.md"), "--dry-run"),
                      "drop --results")
    assert_user_error(run_tool("reproduce.py", *base, "--set", "train.epoch=1", "--dry-run"),
                      "unknown config key 'train.epoch'")
    assert_user_error(run_tool("reproduce.py", *base, "--set", "epochs", "--dry-run"), "--set takes KEY=VALUE")
    assert_user_error(run_tool("reproduce.py", *base, "--epochs", "0", "--dry-run"), "--epochs")
    # a review: --epochs 1 passed the check and every search was then refused (its generation's
    # 2 warm-up epochs took them all); now refused before anything runs
    assert_user_error(run_tool("reproduce.py", *base, "--epochs", "1", "--dry-run"), "search.warmup_epochs=0")
    # "k = v" is k=v: the same folder (a spaced key failed on the page and named another folder)
    spaced = ("--epochs", "1", "--set", "search.warmup_epochs = 0", "--set", " train.limit_batches=2")
    assert run_tool("reproduce.py", *base, *spaced, "--dry-run").stdout == small.stdout


def test_the_fashion_mnist_suite_counts_its_dan_budget_with_the_smoke_overrides(tmp_path):
    from dan.suite import alpha4_flops, plan
    from dan.suite.plan import ROOT, SUITES

    config = os.path.join(ROOT, SUITES["fashion-mnist"]["config"])
    narrow = ("model.args.width=4",)
    budget = lambda runs: next(r for r in runs if r.kind == "search").args  # noqa: E731
    args = budget(plan("fashion-mnist", str(tmp_path), seeds=1, sets=narrow))
    assert args[args.index("--budget-flops") + 1] == str(alpha4_flops(config, sets=narrow)) != str(alpha4_flops(config))


def test_a_smoke_suite_runs_end_to_end_and_its_page_says_nothing_of_the_full_suite(tmp_path):
    # a user's pass: a smoke page estimated the full comparison's time from its smoke runs (0.1 h)
    # and showed the 32-seed confirmation section it never ran
    out = tmp_path / "suite"
    p = run_tool("reproduce.py", "--suite", "search", "--seeds", "1", "--budgets", "flops10", "--methods", "dan,uniform",
                 "--no-ablations", "--epochs", "1", "--set", "search.warmup_epochs=0", "--set", "train.limit_batches=2",
                 "--out", str(out), timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    page_path = p.stdout.strip().splitlines()[-1].split("results: ", 1)[1]
    page = open(page_path).read()
    assert "**Smoke runs, not the suite's:**" in page and "DAN searches for 1 epoch " in page
    assert "Time of the comparison" not in page and "fixed in advance" not in page
    assert "| flops10 |" in page  # its own runs' table
