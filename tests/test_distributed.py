"""torchrun with 2 CPU processes (gloo): same arch.json on both ranks, the checkpoint format of a
1-process run, resume on a different world size."""

import json
import os
import subprocess
import sys

import torch

from tests.helpers import ROOT, run_tool

ARGS = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--batch-size", "32",
        "--limit-batches", "3", "--set", "model.args.width=8", "--set", "data.synthetic_size=256", "--quiet",
        "--no-tensorboard"]


def torchrun(tool, *args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(ROOT, "tools", tool), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def _layout(path):
    state = torch.load(path, weights_only=True)
    model = {k: tuple(v.shape) for k, v in state["model"].items()}
    return sorted(state), model, sorted(state.get("arch", {}))


def test_two_process_search_agrees_and_keeps_the_checkpoint_format(tmp_path):
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    search = ["--epochs", "2", "--budget-flops", "40%", "--set", "search.warmup_epochs=1"]
    p = torchrun("search.py", *ARGS, *search, "--out", two)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    ranks = json.load(open(os.path.join(two, "ranks.json")))
    assert ranks["world"] == 2 and len(set(ranks["arch_sha256"])) == 1
    q = run_tool("search.py", *ARGS, *search, "--out", one)
    assert q.returncode == 0, q.stderr[-3000:]
    assert _layout(os.path.join(two, "checkpoints", "last.pt")) == _layout(os.path.join(one, "checkpoints", "last.pt"))
    arch = json.load(open(os.path.join(two, "arch.json")))
    assert 0.97 <= arch["small"]["flops"] / arch["budget"]["flops"] <= 1.03


def test_two_process_training_resumes_in_one_process(tmp_path):
    out = str(tmp_path / "t")
    p = torchrun("train.py", *ARGS, "--epochs", "1", "--set", "train.latency_batches=[1]", "--out", out)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "small.pt"))
    q = run_tool("train.py", *ARGS, "--epochs", "2", "--set", "train.latency_batches=[1]", "--out", out, "--resume")
    assert q.returncode == 0, q.stderr[-3000:]
    assert torch.load(os.path.join(out, "checkpoints", "last.pt"), weights_only=True)["epoch"] == 2


def test_a_channels_last_model_wrapped_for_ddp_gives_no_gradient_stride_warning(tmp_path):
    # every distributed run printed "Grad strides do not match bucket view strides" (three lines per rank)
    # at its first step: a channels-last 1x1 kernel's strides differ from its gradient's on size-1 dims
    import warnings

    import torch.distributed as dist

    from dan.distributed import wrap

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        class Sliced(torch.nn.Conv2d):  # as an adjoint layer's small path: its gradient comes out contiguous
            def forward(self, x):
                return torch.nn.functional.conv2d(x, self.weight[:8], self.bias[:8])

        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 16, 1), Sliced(16, 16, 1),
                                    torch.nn.Flatten(), torch.nn.LazyLinear(2))
        model(torch.zeros(1, 3, 6, 6))
        model.to(memory_format=torch.channels_last)
        before = [p.detach().clone() for p in model.parameters()]
        ddp = wrap(model, torch.device("cpu"))
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the same values
        x = torch.randn(4, 3, 6, 6).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            ddp(x).sum().backward()
        assert not [w for w in said if "strides" in str(w.message)], [str(w.message) for w in said]
    finally:
        dist.destroy_process_group()
