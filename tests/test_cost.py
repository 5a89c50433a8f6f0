"""Cost model: hand-computed layers, torchvision's published counts, PyTorch's own counter."""

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import dan
from dan.cost import conv2d_macs, format_count, linear_macs, parse_count


def test_hand_computed_conv_and_linear():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 8×8 -> 4×4
    c = dan.count(conv, (1, 3, 8, 8))
    assert c.flops == 3 * 3 * 3 * 8 * 4 * 4 == 3456
    assert c.params == 8 * 3 * 3 * 3 + 8
    grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)  # 2 inputs per output
    assert dan.count(grouped, (1, 8, 5, 5)).flops == 3 * 3 * 2 * 8 * 25
    dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
    assert dan.count(dw, (1, 6, 4, 4)).flops == 9 * 6 * 16
    lin = nn.Linear(20, 7)
    assert dan.count(lin, (3, 20)).flops == 3 * 20 * 7
    assert dan.count(lin, (3, 20)).params == 20 * 7 + 7


def test_small_network_totals_and_breakdown():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    c = dan.count(net, (1, 1, 10, 10))
    expect = conv2d_macs(1, 4, (3, 3), (8, 8)) + conv2d_macs(4, 6, (1, 1), (8, 8)) + linear_macs(6, 5)
    assert expect == 9 * 4 * 64 + 4 * 6 * 64 + 30
    assert c.flops == expect
    by_name = {l.name: l for l in c.layers}
    assert by_name["0"].flops == 9 * 4 * 64 and by_name["0"].kind == "conv"
    assert by_name["1"].kind == "bn" and by_name["1"].params == 8 and by_name["1"].flops == 0
    assert c.params == 36 + 8 + 24 + 6 + 30 + 5
    assert "total" in c.table()
    # batch size multiplies FLOPs, not parameters
    assert dan.count(net, (4, 1, 10, 10)).flops == 4 * expect


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "resnext50_32x4d", "vgg11_bn", "vit_b_32"])
def test_matches_torchvision_meta(name):
    weights = torchvision.models.get_model_weights(name).DEFAULT
    model = torchvision.models.get_model(name)
    c = dan.count(model, (1, 3, 224, 224))
    assert abs(c.flops / 1e9 / weights.meta["_ops"] - 1) < 0.005
    assert c.params == weights.meta["num_params"]


def test_meta_and_real_runs_record_the_same_layers(monkeypatch):
    # the meta run is the default; a zero input on the CPU the fallback: the same records (all 80
    # torchvision models but the ViTs agreed, and 61 timm ones; the ViTs' fused attention is below)
    from dan import cost

    def real(model, shape, device, rec, dtype):
        with rec:
            model(torch.zeros(shape, device=device, dtype=dtype))

    for build, side in ((torchvision.models.mobilenet_v3_small, 64), (torchvision.models.densenet121, 32),
                        (torchvision.models.googlenet, 64)):
        model = build(num_classes=7).eval()
        meta = cost.count(model, (2, 3, side, side))
        with monkeypatch.context() as m:
            m.setattr(cost, "_trace", real)
            zero = cost.count(model, (2, 3, side, side))
        assert [(l.name, l.flops, l.detail, l.calls) for l in meta.layers] == \
            [(l.name, l.flops, l.detail, l.calls) for l in zero.layers]
        assert (meta.flops, meta.params, meta.nonzero_params) == (zero.flops, zero.params, zero.nonzero_params)


def test_count_takes_the_models_dtype_and_refuses_what_is_not_a_model_or_a_shape():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    expect = dan.count(net, (1, 3, 6, 6)).flops
    for dtype in (torch.float64, torch.bfloat16):  # a float32 input was refused by the model
        assert dan.count(net.to(dtype), (1, 3, 6, 6)).flops == expect
    for shape, fragment in (((0, 3, 6, 6), "whole numbers >= 1"), ((1, 3, 6.0, 6), "whole numbers >= 1"),
                            (torch.zeros(1, 3, 6, 6), "got a tensor")):  # batch 0 was a ZeroDivisionError
        with pytest.raises(dan.UserError, match=fragment):
            dan.count(net, shape)
    with pytest.raises(dan.UserError, match="counts a torch.nn.Module, got a str"):
        dan.count("resnet18", (1, 3, 6, 6))


def test_a_large_input_is_counted_without_allocating_it(monkeypatch):
    # a ResNet-18 at 20000 px allocated 4.8 GB and failed after 107 s asking for 24 GB more
    model = torchvision.models.resnet18()
    small = dan.count(model, (1, 3, 2000, 2000)).flops
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: pytest.fail("allocated the input"))
    big = dan.count(model, (1, 3, 20000, 20000))
    assert 99 < big.flops / small < 101


def test_a_model_that_branches_on_its_input_is_counted_on_a_real_zero_input():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 5)

        def forward(self, x):
            return self.a(x) if float(x.sum()) <= 0 else self.b(x)  # no meta run can decide this

    c = dan.count(Branchy(), (2, 4))
    assert c.flops == 2 * 4 * 3 and [l.name for l in c.layers if l.flops] == ["a"]


def test_agrees_with_pytorch_flop_counter():
    model = torchvision.models.resnet18(num_classes=10).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert 2 * dan.count(model, (1, 3, 64, 64)).flops == fc.get_total_flops()


def test_nonzero_parameters():
    lin = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        lin.weight[:5] = 0
    c = dan.count(lin, (1, 10))
    assert c.params == 100 and c.nonzero_params == 50


def test_counts_torchscript_and_export(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    expect = dan.count(model, (1, 3, 8, 8)).flops
    scripted = torch.jit.trace(model, torch.zeros(1, 3, 8, 8))
    assert dan.count(scripted, (1, 3, 8, 8)).flops == expect
    exported = torch.export.export(model, (torch.zeros(1, 3, 8, 8),)).module()
    assert dan.count(exported, (1, 3, 8, 8)).flops == expect
    # each layer once, under its name (its FLOPs were a second row "conv#0" with no parameters)
    rows = lambda m: [(l.name, l.flops, l.params) for l in dan.count(m, (1, 3, 8, 8)).layers]
    assert rows(scripted) == rows(exported) == rows(model)


def test_parse_and_format():
    assert parse_count("1.6G") == 1_600_000_000
    assert parse_count("500M") == 500_000_000
    assert parse_count("1.8m") == 1_800_000
    assert parse_count("250K") == 250_000
    assert parse_count("1234") == 1234
    assert format_count(1_600_000_000) == "1.60G"
    assert format_count(999_999) == "1.00M" and format_count(999_994) == "999.99K"  # was "1000.00K"
    assert parse_count(1.6) == parse_count("1.6") == 2  # a float was truncated, a string rounded
    with pytest.raises(dan.UserError):
        parse_count("lots")


def test_a_free_standing_matmul_has_a_row_of_its_own():
    # its MACs went to the row of the Linear whose weight had the shape of its right operand
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.w = nn.Linear(16, 16), nn.Parameter(torch.ones(16, 16))

        def forward(self, x):
            return torch.matmul(self.fc(x), self.w)

    c = dan.count(Head(), (2, 16))
    rows = {l.name: (l.kind, l.flops) for l in c.layers}
    assert rows["fc"] == ("linear", 2 * 16 * 16) and rows["matmul#0"] == ("matmul", 2 * 16 * 16)
    assert c.flops == 2 * 2 * 16 * 16 and "matmul#0  matmul" in c.table()


def test_a_model_convolving_its_own_weight_in_its_forward_has_one_row_for_it():
    # the FLOPs went to a row of their own, `conv#0`, and the weight's params to `<root>`; a row per root weight
    import torch.nn.functional as F

    from dan.cost import ROOT

    class Standardized(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 3, 3, 3))
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            w = self.w - self.w.mean((1, 2, 3), keepdim=True)
            return self.fc(F.conv2d(x, w, padding=1).mean((2, 3)))

    rows = {l.name: l for l in dan.count(Standardized(), (1, 3, 8, 8)).layers}
    w = f"{ROOT}.w"
    assert set(rows) == {"fc", w}
    row = rows[w]
    assert (row.kind, row.flops, row.params, row.c_in, row.c_out) == ("conv", 8 * 27 * 64, 216, 3, 8)

    class Two(nn.Module):  # two root convs shared one row (the totals were right)
        def __init__(self):
            super().__init__()
            self.a, self.scale = nn.Parameter(torch.randn(8, 3, 3, 3)), nn.Parameter(torch.ones(8))
            self.b = nn.Parameter(torch.randn(8, 8, 1, 1))
            self.c = nn.Parameter(torch.randn(8, 8, 1, 1))  # the same shape as b: matched in the order held

        def forward(self, x):
            x = F.conv2d(x, self.a * self.scale[:, None, None, None], padding=1)
            return F.conv2d(F.conv2d(x, self.b), self.c[:, :4].repeat(1, 2, 1, 1))

    for layer, kind, bias in ((nn.Conv2d(3, 8, 3, padding=1), "conv", 8), (nn.BatchNorm2d(3), "bn", 0)):
        one = dan.count(layer, (1, 3, 4, 4)).layers  # a model that is one layer: one row of its kind
        assert [(l.name, l.kind, l.params, l.bias_params) for l in one] == [(ROOT, kind, layer.weight.numel() + (
            layer.bias.numel()), bias)]
    c = dan.count(Two(), (1, 3, 8, 8))
    rows = {l.name: (l.kind, l.flops, l.params) for l in c.layers}
    assert rows == {f"{ROOT}.a": ("conv", 8 * 27 * 64, 216), f"{ROOT}.scale": ("other", 0, 8),
                    f"{ROOT}.b": ("conv", 64 * 64, 64), f"{ROOT}.c": ("conv", 64 * 64, 64)}
    assert c.flops == sum(f for _, f, _ in rows.values()) and c.params == 216 + 8 + 128
