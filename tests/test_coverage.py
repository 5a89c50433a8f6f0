"""Models beyond the ResNets (issue 11): concatenations, chunks and channel shuffles, permutes
with LayerNorm and layer scale (ConvNeXt), stochastic depth, functional dropout;
the coverage tool on a fast subset of the torchvision zoo."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import dan
from dan import coverage
from dan.adjoint import extract_small, to_adjoint
from dan.supernet import Supernet

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


class ConcatNet(nn.Module):
    """Concatenations read by a BatchNorm, a conv and (flattened) a linear layer, a residual add
    that ties two groups, a concatenation that repeats a part."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 12, 1)
        self.bn = nn.BatchNorm2d(20)
        self.c, self.d = nn.Conv2d(20, 16, 3, padding=1, bias=False), nn.Conv2d(20, 16, 1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 4, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        xa, xb = F.relu(self.a(x)), F.relu(self.b(x))
        y = F.relu(self.bn(torch.cat([xa, xb], 1)))
        z = self.c(y) + self.d(y)
        w = self.bn2(torch.cat((z, xa, xa), dim=1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(w, 2), 1))


class SplitNet(nn.Module):
    """Channel ranges with sizes in the graph: an unequal split (MixNet), a slice of a concatenation
    (GhostNet), a cut between the parts of a concatenation (DPN), a per-channel vector reshaped to
    broadcast (timm's ConvNeXt gamma)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 16, 1)
        self.k3, self.k5 = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(12, 12, 5, padding=2, groups=12)
        self.cheap = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 20))
        self.fc, self.fc2 = nn.Linear(20, 5), nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.conv(F.relu(self.stem(x))))
        a, b = torch.split(x, [4, 12], 1)
        y = torch.cat([self.k3(a), self.k5(b)], 1)
        z = torch.cat([y, self.cheap(y)], 1)[:, :20]
        z = z.mul(self.gamma.reshape(1, -1, 1, 1))
        u = torch.cat([z, x], 1)[:, 20:]  # cut between the parts of a concatenation (DPN)
        return self.fc(z.mean((2, 3))) + self.fc2(u.mean((2, 3)))


def _one_step(anet, x, y):
    anet.train()
    big, small = anet(x)
    dan.adjoint_loss(big, small, y, 1.0).backward()
    torch.optim.SGD(anet.parameters(), lr=0.05).step()
    anet.eval()


@pytest.mark.parametrize("build,shape", [
    (ConcatNet, (1, 3, 8, 8)),
    (lambda: torchvision.models.densenet121(num_classes=5), (1, 3, 32, 32)),
    (lambda: torchvision.models.squeezenet1_1(num_classes=5), (1, 3, 64, 64)),
    (lambda: torchvision.models.googlenet(num_classes=5, aux_logits=False, init_weights=True), (1, 3, 32, 32)),
    (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=5), (1, 3, 64, 64)),
    (lambda: torchvision.models.convnext_tiny(num_classes=5), (1, 3, 32, 32)),
    (SplitNet, (1, 3, 8, 8)),
], ids=["custom", "densenet121", "squeezenet1_1", "googlenet", "shufflenet_v2", "convnext_tiny", "splits"])
def test_concatenations_and_shuffles_extract_exactly_and_cost_exactly_at_any_widths(build, shape):
    torch.manual_seed(0)
    base = build()
    sn = Supernet(to_adjoint(base, alpha=1, input_shape=shape), FRACTIONS, shape)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((4,) + shape[1:], generator=g)
    y = torch.randint(0, 5, (4,), generator=g)
    for trial in range(2):
        choice = [int(torch.randint(len(c), (1,), generator=g)) for c in sn.cands]
        widths = {grp.name: w for grp, w in zip(sn.groups, sn.widths_of(choice))}
        anet = to_adjoint(base, widths=widths, input_shape=shape)
        _one_step(anet, x, y)  # the small BatchNorm statistics of concatenations are written back
        net = extract_small(anet)
        with torch.no_grad():
            ref, out = anet.small(x), net(x)
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
        real = dan.count(net, shape)
        assert sn.cost_of(choice) == (real.flops, real.params)
        one_hot = [F.one_hot(torch.tensor(k), len(c)).double() for k, c in zip(choice, sn.cands)]
        ef, ep = sn.table.expected(one_hot, sn.cand_tensors)
        assert (round(float(ef)), round(float(ep))) == (real.flops, real.params)


def test_a_concatenation_of_soft_masked_parts_runs_and_backpropagates_to_the_logits():
    shape = (1, 3, 8, 8)
    sn = Supernet(to_adjoint(ConcatNet(), alpha=1, input_shape=shape), FRACTIONS, shape)
    for grp, cands in zip(sn.groups, sn.cands):
        grp.width = max(cands)
        grp.mask = torch.linspace(1.0, 0.1, grp.width, requires_grad=True)
    _, small = sn.anet(torch.randn(2, *shape[1:]))
    small.sum().backward()
    assert all(grp.mask.grad is not None and grp.mask.grad.abs().sum() > 0 for grp in sn.groups)


def test_concatenation_along_another_dimension_is_refused():
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return torch.cat([y, y], 2).mean((1, 2, 3)).unsqueeze(1)

    with pytest.raises(dan.UnsupportedModelError, match="dim 2"):
        to_adjoint(Spatial(), input_shape=(1, 3, 8, 8))


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 3)

    def forward(self, x):
        x = F.dropout(F.relu(self.conv(x)).mean((2, 3)), 0.5, self.training)
        return self.fc(x)


def test_functional_dropout_and_stochastic_depth_follow_train_and_eval():
    """Tracing freezes ``training=self.training`` at its value during the trace: the converted
    network must still be deterministic in eval and random in training."""
    x = torch.randn(8, 3, 8, 8)
    for model in (FunctionalDropout(), torchvision.models.efficientnet_b0(num_classes=3, stochastic_depth_prob=0.5)):
        shape = (1, 3, 32, 32)
        x = torch.randn((8,) + shape[1:])
        anet = to_adjoint(model, input_shape=shape, stem=0).eval()
        with torch.no_grad():
            a, b = anet(x)[0], anet(x)[0]
            assert torch.equal(a, b) and torch.allclose(a, model.eval()(x), atol=1e-5)
            anet.train()
            assert not torch.equal(anet(x)[1], anet(x)[1])


# the concatenation / shuffle / ConvNeXt models are checked above (at random widths, cost included)
FAST = ["mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf"]


def test_coverage_of_a_fast_subset_of_the_torchvision_zoo():
    entries = [e for e in coverage.torchvision_models() if e[0] in FAST + ["swin_t"]]
    rows = {r.name: r for r in coverage.run_zoo(entries, "torchvision")}
    for name in FAST:
        r = rows[name]
        assert r.status == "pass", (name, r.reason)
        assert r.max_rel_err <= coverage.RTOL and r.flops_ratio > 2.0, (name, r)
        assert r.memory_estimate == pytest.approx(1.0, abs=1e-3), (name, r)  # dan.memory is exact here
    assert rows["swin_t"].status == "refused" and rows["swin_t"].reason  # a clear reason, not a crash
    page = coverage.markdown(list(rows.values()))
    assert f"{len(FAST)} of {len(FAST) + 1} pass" in page and "| torchvision | swin_t | refused |" in page
    assert f"Memory estimate exact on {len(FAST)} of {len(FAST)} passing models." in page


TIMM_FAST = ["mixnet_s", "ghostnet_100", "convnext_atto", "efficientnet_b0", "dpn68"]


def test_coverage_of_a_fast_subset_of_the_timm_list():
    pytest.importorskip("timm")
    rows = coverage.run_zoo(coverage.timm_models(TIMM_FAST), "timm")
    assert [(r.name, r.status) for r in rows] == [(n, "pass") for n in TIMM_FAST], [r.reason for r in rows]


def test_a_wrong_extraction_is_reported_as_wrong_not_as_a_pass(monkeypatch):
    import dan.adjoint

    real = dan.adjoint.extract_small

    def off_by_a_little(anet):
        net = real(anet)
        with torch.no_grad():
            next(p for p in net.parameters() if p.ndim == 4).mul_(1.5)
        return net

    monkeypatch.setattr(dan.adjoint, "extract_small", off_by_a_little)
    row = coverage.run_one("torchvision", "resnet18", lambda: torchvision.models.resnet18(num_classes=10),
                           (1, 3, 64, 64))
    assert row.status == "wrong" and "differs" in row.reason
