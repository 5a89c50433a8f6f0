"""Adjoint conversion: small path == extracted network on every supported model, groups, masks."""

import pytest
import torch
import torch.nn as nn
import torchvision

import dan
import search_spaces
from dan.layers import AdjointBatchNorm2d, AdjointConv2d

TORCHVISION = ["resnet18", "resnet34", "resnet50", "wide_resnet50_2", "resnext50_32x4d",
               "mobilenet_v2", "vgg11_bn"]


def _models():
    for name in TORCHVISION:
        yield name, (lambda n=name: torchvision.models.get_model(n, num_classes=10)), (2, 3, 64, 64)
    for name in search_spaces.list_spaces():
        small = name.endswith("_small")
        shape = (2, 1, 28, 28) if small else (2, 1, 64, 64)
        yield name, (lambda n=name: search_spaces.create(n, num_classes=10, in_channels=1, width=16)), shape


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


@pytest.mark.parametrize("name,make,shape", list(_models()), ids=[m[0] for m in _models()])
def test_small_path_equals_extracted(name, make, shape):
    torch.manual_seed(0)
    model = make()
    _randomize_bn(model)
    model.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        reference = model(x)
    anet = dan.to_adjoint(model, alpha=4, beta=0.25, input_shape=shape)
    anet.eval()
    with torch.no_grad():
        big, small = anet(x)
        assert torch.allclose(big, reference, atol=1e-5), "big path must be the original network"
        anet.train()
        for _ in range(2):  # move the small BatchNorm statistics away from their start
            anet(torch.randn(*shape))
        anet.eval()
        big, small = anet(x)
        assert not torch.allclose(big, small, atol=1e-3)
        net = dan.extract_small(anet)
        assert not any(type(m).__module__.startswith("dan") for m in net.modules())
        assert torch.allclose(net(x), small, atol=1e-5)
        assert torch.allclose(anet.small(x), small, atol=1e-6)
        assert torch.allclose(anet.big(x), big, atol=1e-6)
    cb = dan.count(anet.big, (1,) + shape[1:])
    cs = dan.count(net, (1,) + shape[1:])
    assert cs.flops < cb.flops / 3 and cs.params < cb.params / 8
    assert cs.nonzero_params < 0.85 * cs.params  # r_beta zeroed a quarter of the adjoint weights


def test_resnet18_groups_follow_the_residual_structure():
    anet = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), alpha=4, input_shape=(1, 3, 64, 64))
    groups = {g.name: g for g in anet.groups}
    # stem output and the layer1 residual stream meet at adds: one group, fixed by the stem
    assert groups["conv1"].fixed == "stem" and groups["conv1"].width == 64
    assert anet.layer_groups["layer1.0.conv2"][1] == "conv1"
    # layer2's residual stream: both blocks' conv2 and the downsample write one group
    res2 = anet.layer_groups["layer2.0.conv2"][1]
    assert anet.layer_groups["layer2.0.downsample.0"][1] == res2 == anet.layer_groups["layer2.1.conv2"][1]
    assert groups[res2].width == 32
    assert groups["layer1.0.conv1"].width == 16
    assert groups["fc"].fixed == "output" and groups["input"].fixed == "input"


def test_grouped_and_depthwise_widths_keep_group_structure():
    anet = dan.to_adjoint(torchvision.models.resnext50_32x4d(num_classes=10), alpha=4,
                          input_shape=(1, 3, 64, 64))
    conv = anet.body.get_submodule("layer1.0.conv2")
    assert isinstance(conv, AdjointConv2d)
    assert conv.in_group is conv.out_group and conv.out_group.quantum == 4
    assert conv.small_groups() == 8  # 32 channels in groups of 4


def test_small_path_is_computed_on_sliced_tensors():
    anet = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), alpha=4, input_shape=(1, 3, 64, 64))
    seen = set()
    conv = anet.body.get_submodule("layer3.0.conv2")
    conv.register_forward_hook(lambda m, args, out: seen.add(out.shape[1]))
    anet(torch.randn(2, 3, 64, 64))
    assert set(seen) == {256, 64}


def test_gradients_of_the_small_path_reach_only_the_kept_filters():
    anet = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), alpha=4, input_shape=(1, 3, 32, 32))
    _, small = anet(torch.randn(2, 3, 32, 32))
    small.sum().backward()
    w = anet.body.get_submodule("layer2.0.conv1").weight.grad
    assert w[:32, :64].abs().sum() > 0 and w[32:].abs().sum() == 0
    bn = anet.body.get_submodule("layer2.0.bn1")
    assert isinstance(bn, AdjointBatchNorm2d) and bn.weight.grad is None and bn.small.weight.grad is not None


def test_rbeta_mask_is_exact_seeded_and_a_buffer():
    make = lambda seed: dan.to_adjoint(torchvision.models.resnet18(num_classes=10), alpha=2, beta=0.5,
                                       mask_seed=seed, input_shape=(1, 3, 32, 32))
    a, b, c = make(0), make(0), make(1)
    ma = a.body.get_submodule("layer2.0.conv2").rbeta
    assert ma.shape == (64, 64, 3, 3) and int((~ma).sum()) == round(0.5 * ma.numel())
    assert torch.equal(ma, b.body.get_submodule("layer2.0.conv2").rbeta)
    assert not torch.equal(ma, c.body.get_submodule("layer2.0.conv2").rbeta)
    assert any(k.endswith("rbeta") for k in a.state_dict())


def test_options_widths_unmasked_and_stem():
    model = torchvision.models.resnet50(num_classes=10)
    anet = dan.to_adjoint(model, alpha=4, unmasked=("layer1",), input_shape=(1, 3, 64, 64))
    assert all(anet.group(anet.layer_groups[n][1]).width == anet.group(anet.layer_groups[n][1]).full
               for n in anet.layer_groups if n.startswith("layer1."))
    assert anet.group(anet.layer_groups["layer2.0.conv1"][1]).width == 32
    anet0 = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), alpha=4, stem=0,
                           input_shape=(1, 3, 64, 64))
    assert anet0.group("conv1").width == 16 and isinstance(anet0.body.get_submodule("conv1"), AdjointConv2d)
    w = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), widths={"layer1.0.conv1": 8},
                       input_shape=(1, 3, 64, 64))
    assert w.group("layer1.0.conv1").width == 8 and w.group("layer1.1.conv1").width == 16
    with pytest.raises(dan.UserError, match="unknown width group"):
        dan.to_adjoint(torchvision.models.resnet18(), widths={"nope": 8}, input_shape=(1, 3, 64, 64))
    with pytest.raises(dan.UserError, match="fixed"):
        dan.to_adjoint(torchvision.models.resnet18(), widths={"conv1": 8}, input_shape=(1, 3, 64, 64))
    with pytest.raises(dan.UserError):
        dan.to_adjoint(torchvision.models.resnet18(), alpha=0.5)
    # a single prefix is one prefix (it was read letter by letter and matched nothing)
    one = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), unmasked="layer1", input_shape=(1, 3, 64, 64))
    assert one.group(one.layer_groups["layer1.0.conv1"][1]).width == 64
    # what converted silently into something not asked for: a typo, a negative stem, a stem sharing every conv
    small = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(dan.UserError, match="'layerX' names no conv or linear layer of ResNet.*layer1"):
        dan.to_adjoint(small, unmasked=("layerX",), input_shape=(1, 3, 64, 64))
    with pytest.raises(dan.UserError, match="stem must be a whole number >= 0"):
        dan.to_adjoint(small, stem=-1, input_shape=(1, 3, 64, 64))
    with pytest.raises(dan.UserError, match="the small network would be the big one; lower stem"):
        dan.to_adjoint(small, stem=100, input_shape=(1, 3, 64, 64))
    # a wrapper names what to pass instead of torch.fx's "Proxy object cannot be iterated"
    with pytest.raises(dan.UserError, match="not a DataParallel wrapper of it: pass model.module"):
        dan.to_adjoint(nn.DataParallel(small))
    with pytest.raises(dan.UserError, match="not a torch.compile wrapper of it: pass model._orig_mod"):
        dan.to_adjoint(torch.compile(small))
    with pytest.raises(dan.UserError, match="got a ResNet: convert the model first"):
        dan.extract_small(small)
    with pytest.raises(dan.UserError, match="got a DataParallel: pass the adjoint network it wraps .model.module."):
        dan.extract_big(nn.DataParallel(one))


def test_state_dict_round_trip():
    torch.manual_seed(0)
    make = lambda: dan.to_adjoint(search_spaces.create("resnet18_small", width=8), alpha=4,
                                  input_shape=(1, 3, 32, 32))
    a, b = make(), make()
    a.train()
    a(torch.randn(4, 3, 32, 32))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(2, 3, 32, 32)
    for u, v in zip(a(x), b(x)):
        assert torch.equal(u, v)


@pytest.mark.parametrize("make", [lambda: search_spaces.create("resnet18_small", width=8),
                                  lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10)],
                         ids=["resnet18_small", "shufflenet_v2 (channel splits)"])
def test_torch_save_of_an_adjoint_network_round_trips(tmp_path, make):
    # torch.save(anet) was "cannot pickle 'module' object" (the path graphs' shape records)
    torch.manual_seed(0)
    anet = dan.to_adjoint(make(), alpha=4, input_shape=(1, 3, 32, 32))
    torch.save(anet, tmp_path / "anet.pt")
    loaded = torch.load(tmp_path / "anet.pt", weights_only=False)
    anet.eval(), loaded.eval()
    x = torch.randn(2, 3, 32, 32)
    for u, v in zip(anet(x), loaded(x)):
        assert torch.equal(u, v)
    assert torch.equal(dan.extract_small(loaded)(x), dan.extract_small(anet)(x))
    assert torch.equal(loaded.small(x), anet.small(x)) and torch.equal(loaded.big(x), anet.big(x))
    with torch.no_grad():  # the views still share the loaded network's weights
        next(loaded.parameters()).add_(1.0)
    assert not torch.equal(loaded.small(x), anet.small(x)) and torch.equal(loaded.small(x), loaded(x)[1])


class TiedConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1 = nn.Conv2d(16, 32, 3, padding=1)
        self.a, self.b = nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.b.weight = self.a.weight  # weight tying: one parameter, two layers
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.c1(torch.relu(self.bn(self.stem(x)))))
        return self.fc(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


def test_extraction_keeps_tied_weights_tied():
    # each extracted layer copied its weight, so the big network held (and counted) 23,946 params
    # against the model's 14,730
    torch.manual_seed(0)
    model = TiedConvs().eval()
    anet = dan.to_adjoint(model, alpha=2, input_shape=(1, 3, 16, 16)).eval()
    big, small = dan.extract_big(anet), dan.extract_small(anet)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(big(x), model(x)) and torch.equal(small(x), anet(x)[1])
    assert big.a.weight is big.b.weight and small.a.weight is small.b.weight
    assert dan.count(big, (1, 3, 16, 16)).params == dan.count(model, (1, 3, 16, 16)).params


class WithInstanceNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return x


def test_unsupported_models_name_the_op_or_module():
    with pytest.raises(dan.UnsupportedModelError, match="norm.*InstanceNorm2d"):
        dan.to_adjoint(WithInstanceNorm(), input_shape=(1, 3, 8, 8))
    with pytest.raises(dan.UnsupportedModelError, match="DataDependent"):
        dan.to_adjoint(DataDependent(), input_shape=(1, 3, 8, 8))


def test_strided_pointwise_conv_trains_channels_last_at_odd_small_widths(monkeypatch):
    """A 1×1 stride-2 conv (a ResNet downsample) with 7 small input channels, channels-last: the
    layer subsamples then convolves at stride 1, the same numbers as the strided conv; the direct
    call's weight gradient corrupts the heap in PyTorch 2.14's oneDNN on AVX2-only CPUs (one thread)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 4))
    anet = dan.to_adjoint(model, stem=0, input_shape=(2, 1, 28, 28))
    widths = {"0": 7, "3": 14}
    assert {g.name for g in anet.groups if not g.fixed} == set(widths)
    anet = dan.to_adjoint(model, stem=0, widths=widths, input_shape=(2, 1, 28, 28))
    from dan import layers
    from dan.layers import channels_last_safe

    # with AVX-512 (or on a GPU): a plain model with that conv trains in NCHW (the trainer asks),
    # 8 input channels included (they crashed on an AVX-512 Xeon); the adjoint one is safe
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: True)
    assert not channels_last_safe(model) and channels_last_safe(anet)
    assert not channels_last_safe(nn.Sequential(nn.Conv2d(1, 7, 3), nn.Conv2d(7, 14, 1, stride=2)))
    assert channels_last_safe(nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 1, stride=2)))
    assert channels_last_safe(torchvision.models.resnet18())  # 64, 128, 256 input channels
    # on an AVX2-only CPU every model trains in NCHW (full searches still crashed channels-last)
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: False)
    assert not channels_last_safe(torchvision.models.resnet18()) and not channels_last_safe(anet, "cpu")
    assert channels_last_safe(anet, torch.device("cuda"))
    anet.to(memory_format=torch.channels_last)
    conv = anet.body.get_submodule("3")
    assert isinstance(conv, AdjointConv2d) and conv.in_group.width == 7
    x = torch.randn(128, 7, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the bug shows on one thread (the suites' --jobs 2 runs)
    try:
        for _ in range(5):
            conv(x, small=True).sum().backward()
    finally:
        torch.set_num_threads(threads)
    h = torch.randn(2, 8, 28, 28)
    ref = torch.nn.functional.conv2d(h, conv.weight, stride=2)
    assert torch.equal(conv(h), ref)
    assert torch.equal(conv(h[:, :7], small=True), torch.nn.functional.conv2d(h[:, :7], conv.weight[:14, :7], stride=2))


@pytest.mark.parametrize("method", ["standard", "adjoint"])
def test_a_width_8_resnet_trains_where_its_downsample_crashed_onednn(tmp_path, method):
    """tools/fuzz.py found it (thirty-sixth session): a valid config (width-8 ResNet-18, batch 7)
    corrupted the heap on an AVX-512 CPU, in the weight gradient of the channels-last strided 1×1
    downsample with 8 input channels; at 56×56 it does at any batch, on one thread or two. Run in a
    subprocess: unguarded, the crash would take pytest with it."""
    import yaml

    from tests.helpers import run_tool

    cfg = {"name": "onednn", "seed": 0, "model": {"space": "resnet18_small", "args": {"width": 8}},
           "data": {"dataset": "synthetic", "image_size": 56, "num_classes": 4, "synthetic_size": 12,
                    "batch_size": 6},
           "train": {"method": method, "epochs": 1, "limit_batches": 2, "latency_batches": [1]}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = run_tool("train.py", "--config", str(path), "--quiet", "--no-tensorboard", "--out", str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_float64_model_converts_and_runs_in_its_own_type():
    # the example input was float32 ("does not run on an input of shape ...") and the small BatchNorms too
    model = torchvision.models.resnet18(num_classes=10).double()
    anet = dan.to_adjoint(model, input_shape=(1, 3, 32, 32)).train()
    big, small = anet(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert big.dtype == small.dtype == torch.float64
    assert dan.extract_small(anet).eval()(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("affine,track", [(False, False), (True, False), (False, True)])
def test_a_batchnorm_without_affine_parameters_or_running_statistics_converts_exactly(affine, track):
    # BatchNorm2d(c, affine=False, track_running_stats=False) holds no tensor: conversion stopped on a
    # bare StopIteration. It normalizes each batch by its own statistics, in eval mode too, and so
    # do its small twin and the extracted network's BatchNorm
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                          nn.BatchNorm2d(16, affine=affine, track_running_stats=track), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    x = torch.randn(3, 3, 8, 8)
    anet = dan.to_adjoint(model, input_shape=(1, 3, 8, 8))
    with torch.no_grad():
        for mode in (True, False):
            anet.train(mode)
            big, small = anet(x)
            assert torch.allclose(big, model.train(mode)(x), atol=1e-6)
        anet.eval()
        big, small = anet(x)
        assert torch.allclose(dan.extract_small(anet)(x), small, atol=1e-6)
    assert anet.group("2").width == 4


class _Normalized(nn.Module):
    """A network that normalizes its input with registered buffers (or constants) first."""

    def __init__(self, normalize):
        super().__init__()
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]))
        self.register_buffer("std", torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1))
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c, self.fc = nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(self.normalize(self, x))))
        return self.fc(self.c(x).mean((2, 3)))


@pytest.mark.parametrize("normalize", [
    lambda s, x: (x - s.mean.view(1, 3, 1, 1)) / s.std,
    lambda s, x: x.sub(s.mean.reshape(1, -1, 1, 1)).mul(1 / s.std) * 2.0 + torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1),
], ids=["buffers", "methods-and-constant"])
def test_an_input_normalized_by_buffers_keeps_the_shared_stem(normalize):
    # the stem was lost (anet.stem == []) and the first conv narrowed: the subtraction read an
    # attribute, which was not counted as shared with the input
    torch.manual_seed(0)
    model = _Normalized(normalize).eval()
    plain = _Normalized(lambda s, x: x)
    anet = dan.to_adjoint(model, input_shape=(1, 3, 8, 8))
    assert anet.stem == ["stem"] == dan.to_adjoint(plain, input_shape=(1, 3, 8, 8)).stem
    assert anet.widths() == {"input": 3, "stem": 16, "c": 8, "fc": 4}
    x = torch.randn(2, 3, 8, 8)
    anet.eval()
    with torch.no_grad():
        big, small = anet(x)
        assert torch.allclose(big, model(x), atol=1e-6)
        assert torch.allclose(dan.extract_small(anet)(x), small, atol=1e-6)
        assert torch.allclose(anet.small(x), small, atol=1e-6)


class _Split(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.sizes = sizes
        self.stem, self.c = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        a, b = torch.split(self.c(torch.relu(self.stem(x))), self.sizes, 1)
        return self.fc(torch.cat([torch.relu(a), b], 1).mean((2, 3)))


def test_a_group_that_alpha_cannot_narrow_is_named_in_a_warning(recwarn):
    # torch.split(x, [5, 27], 1) left its group at 32/32 with alpha=4 and no word
    with pytest.warns(UserWarning, match=r"width group 'c' stays at its full 32 channels at alpha=4: its widths must "
                                         r"be multiples of 32 \(node split cuts it into 5 \+ 27 channels.*torch.chunk"):
        anet = dan.to_adjoint(_Split([5, 27]), alpha=4, input_shape=(1, 3, 8, 8))
    assert anet.group("c").width == 32
    recwarn.clear()
    # sizes that scale are cut in the same proportions (8 + 24 of 32 -> 2 + 6 of 8): no warning
    assert dan.to_adjoint(_Split([8, 24]), alpha=4, input_shape=(1, 3, 8, 8)).group("c").width == 8
    dan.to_adjoint(_Split([5, 27]), alpha=1, input_shape=(1, 3, 8, 8))  # nothing asked narrower
    assert not [w for w in recwarn if "stays at its full" in str(w.message)]
