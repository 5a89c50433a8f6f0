"""ONNX export: checked against PyTorch with ONNX Runtime; without the extra, one warning and no file."""

import copy
import os
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from dan import onnx_export
from dan.deploy import deploy_form, save_deployable


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 5, 3, stride=2), nn.BatchNorm2d(5), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding matters
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net.eval()


def test_small_onnx_matches_pytorch_at_any_batch(tmp_path):
    net = _net()
    meta = save_deployable(net, str(tmp_path), (1, 3, 12, 12))
    assert meta["onnx"]["verified"] and meta["onnx"]["max_abs_diff"] <= onnx_export.TOLERANCE
    sess = onnx_export.session(str(tmp_path / "small.onnx"))
    x = torch.randn(5, 3, 12, 12)  # a batch size the export never saw
    got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(got, net(x), atol=1e-4)
    assert onnx_export.latency(str(tmp_path / "small.onnx"), (1, 3, 12, 12), min_time=0.01) > 0


def test_a_wrong_file_is_caught_by_the_check(tmp_path):
    net = _net()
    path = str(tmp_path / "n.onnx")
    onnx_export.export(deploy_form(net), path, (1, 3, 12, 12))
    with torch.no_grad():
        net[-1].bias += 1.0  # the network changed after export: the check must see it
    assert onnx_export.verify(net, path, (1, 3, 12, 12)) == pytest.approx(1.0, abs=1e-4)


def test_the_check_is_relative_to_the_logits_scale(tmp_path):
    """Logits in the thousands (short or diverged training) differ between runtimes by more than
    1e-4 in absolute terms from float32 rounding alone: the check allows 1e-4 of the largest one,
    and still catches a file that is wrong by more."""
    net = _net()
    with torch.no_grad():
        net[-1].weight.mul_(1e5)
    meta = save_deployable(net, str(tmp_path), (1, 3, 12, 12))["onnx"]
    assert meta["max_abs_logit"] > 1e3 and meta["verified"]
    assert meta["max_abs_diff"] <= onnx_export.TOLERANCE * meta["max_abs_logit"]
    with torch.no_grad():
        net[-1].bias += 1e-3 * meta["max_abs_logit"]  # wrong by a thousandth of the largest logit
    diff, scale, own = onnx_export.compare(net, str(tmp_path / "small.onnx"), (1, 3, 12, 12))
    assert diff > onnx_export.TOLERANCE * scale and diff > 100 * own


@pytest.mark.parametrize("diff,scale,own,verified", [
    (5e-5, 0.5, 0.0, True), (2e-4, 0.5, 0.0, False),  # small logits: 1e-4 absolute
    (0.1, 1500.0, 0.0, True), (0.2, 1500.0, 0.0, False),  # large ones: 1e-4 of the largest
    (0.15, 1400.0, 0.17, True), (0.4, 1400.0, 0.17, False),  # ill-conditioned: PyTorch's own error
])
def test_what_the_check_accepts(tmp_path, monkeypatch, diff, scale, own, verified):
    monkeypatch.setattr(onnx_export, "compare", lambda *a, **k: (diff, scale, own))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = save_deployable(_net(), str(tmp_path), (1, 3, 12, 12))["onnx"]
    assert meta["verified"] is verified and meta["float32_error"] == own
    assert any("differs from PyTorch" in str(w.message) for w in caught) is not verified


def test_without_the_extra_one_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    monkeypatch.setattr(onnx_export, "_warned", [False])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = save_deployable(_net(), str(tmp_path / "a"), (1, 3, 12, 12))
        b = save_deployable(_net(), str(tmp_path / "b"), (1, 3, 12, 12))
    hints = [w for w in caught if "dan[onnx]" in str(w.message)]
    assert len(hints) == 1
    assert "onnx" not in a and "onnx" not in b
    assert os.path.isfile(tmp_path / "a" / "small.pt2") and not os.path.exists(tmp_path / "a" / "small.onnx")


def _upsampling_net():
    """An adaptive pooling to a size that does not divide its input (torchvision's VGG and AlexNet
    below 224 pixels): PyTorch's TorchScript-based ONNX exporter refuses it."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                         nn.Linear(36, 5)).eval()


def test_a_network_the_torchscript_exporter_refuses_is_exported_by_the_other_quietly(tmp_path, capfd):
    meta = save_deployable(_upsampling_net(), str(tmp_path), (1, 3, 6, 6))["onnx"]
    assert meta["verified"] and meta["exporter"] == "torch.export"
    assert meta["opset"] == onnx_export.OPSET_TORCH_EXPORT == onnx_export.file_opset(str(tmp_path / "small.onnx"))
    out, err = capfd.readouterr()
    assert "graph" not in out + err and "[torch.onnx]" not in out + err  # no exporter's dump or progress
    # the usual network still takes the TorchScript-based exporter, and the file says its opset
    meta = save_deployable(_net(), str(tmp_path / "b"), (1, 3, 12, 12))["onnx"]
    assert meta["exporter"] == "torchscript" and meta["opset"] == onnx_export.OPSET


def test_without_onnxscript_a_refused_network_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import raises ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = save_deployable(_upsampling_net(), str(tmp_path), (1, 3, 6, 6))
    said = [str(w.message) for w in caught if "not written" in str(w.message)]
    assert len(said) == 1 and "onnxscript" in said[0] and "dan[onnx]" in said[0] and "adaptive" in said[0]
    assert "onnx" not in meta and os.path.isfile(tmp_path / "small.pt2")
    assert not os.path.exists(tmp_path / "small.onnx")


def test_when_both_exporters_fail_the_warning_gives_both_reasons_and_the_run_goes_on(tmp_path, monkeypatch):
    def refuse(model, args, path, *, dynamo, **kw):
        raise RuntimeError(f"refused by the {'new' if dynamo else 'old'} one\nmore lines")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = save_deployable(_net(), str(tmp_path), (1, 3, 12, 12))
    said = [str(w.message) for w in caught if "not written" in str(w.message)]
    assert len(said) == 1 and "(refused by the old one), and the torch.export-based one (refused by the new one)" in said[0]
    assert "onnx" not in meta and os.path.isfile(tmp_path / "small.pt2") and not os.path.exists(tmp_path / "small.onnx")


def test_every_runtime_form_is_timed_and_best_is_the_fastest_of_each_network():
    from dan.bench import inference_speedup

    r = inference_speedup("resnet18_small", width=8, image=16, batches=(1,), rounds={1: 2})
    b = r["batches"]["1"]
    assert {f.split("@")[0] for f in b["runtimes"]} == {"eager", "eager_nchw", "torchscript", "onnxruntime"}
    assert all(v["big_ms"] > 0 and v["small_ms"] > 0 for v in b["runtimes"].values())
    best = b["best"]
    assert best["big_ms"] == min(v["big_ms"] for v in b["runtimes"].values())
    assert best["small_ms"] == min(v["small_ms"] for v in b["runtimes"].values())
    assert best["speedup_over_flops_ratio"] == pytest.approx(best["speedup"] / r["flops_ratio"])


@pytest.mark.parametrize("affine", [False, True])
def test_a_batchnorm_without_running_statistics_exports_and_matches(tmp_path, affine):
    # it normalizes by the batch's own statistics, in evaluation too; the TorchScript exporter
    # refused the module (an AssertionError): no small.onnx, and a Python warning after a good run
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, affine=affine, track_running_stats=False),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    if affine:
        with torch.no_grad():
            net[1].weight.uniform_(0.5, 2)
            net[1].bias.uniform_(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta = save_deployable(net, str(tmp_path), (1, 3, 12, 12))
    assert meta["onnx"]["verified"] and meta["onnx"]["exporter"] == "torchscript"
    sess = onnx_export.session(str(tmp_path / "small.onnx"))
    x = torch.randn(5, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]), net(x), atol=1e-5)
    assert isinstance(net[1], nn.BatchNorm2d)  # the network given is left as it was


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_the_spelt_out_batch_statistics_norm_is_the_batchnorm_in_every_dimension_and_half_precision(dim):
    from dan.deploy import BatchStatsNorm

    torch.manual_seed(0)
    bn = getattr(nn, f"BatchNorm{dim}d")(6, track_running_stats=False).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn((4, 6) + (5,) * dim) + 50
    with torch.no_grad():
        assert torch.allclose(BatchStatsNorm(bn)(x), bn(x), atol=1e-5)
        # bfloat16 in and out, the statistics in float32: within a few roundings (2^-6) of the
        # float32 result on the same input (statistics taken in bfloat16 were 0.13 off at a mean of 50)
        xb = x.bfloat16()
        ref = bn(xb.float())
        got = BatchStatsNorm(copy.deepcopy(bn).to(torch.bfloat16))(xb)
        assert got.dtype == torch.bfloat16 and ((got.float() - ref).abs() / ref.abs().clamp(min=1)).max() <= 2 ** -6
