"""Models beyond the ResNets (issue 11): concatenations, chunks and channel shuffles, permutes
with LayerNorm and layer scale (ConvNeXt), stochastic depth, functional dropout;
the coverage tool on a fast subset of the torchvision zoo."""

import math

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


class ScalesNet(nn.Module):
    """Res2Net's first block of a stage: a conv's output split into equal scales, each but the
    last read by a conv, the last pooled, the scales concatenated again."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))
        self.conv3, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        pieces, out = torch.split(F.relu(self.bn1(self.conv1(x))), 4, 1), []
        for i, conv in enumerate(self.convs):
            out.append(F.relu(conv(pieces[i])))
        y = self.conv3(torch.cat(out + [F.avg_pool2d(pieces[3], 3, 1, 1)], 1))
        return self.fc((x + y).mean((2, 3)))


class Conv2dSame(nn.Conv2d):
    """timm's TensorFlow-style "same" conv, written as timm writes it: the padding is computed in
    Python from the input's size (``math.ceil``, ``max``), which torch.fx cannot trace."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias,
                         device=device, dtype=dtype)

    def forward(self, x):
        return F.conv2d(_pad_same(x, self.kernel_size, self.stride), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    def forward(self, x):
        k, s = (self.kernel_size,) * 2, (self.stride,) * 2
        return F.max_pool2d(_pad_same(x, k, s, -float("inf")), self.kernel_size, self.stride)


def _pad_same(x, k, s, value=0.0):
    ih, iw = x.size()[-2:]
    ph = max((math.ceil(ih / s[0]) - 1) * s[0] + k[0] - ih, 0)
    pw = max((math.ceil(iw / s[1]) - 1) * s[1] + k[1] - iw, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


class SameNet(nn.Module):
    """TensorFlow-ported networks (timm's ``tf_*``): strided "same" convs and pools whose padding is
    uneven (the odd pixel after), a depthwise one among them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down, self.bn = Conv2dSame(8, 16, 3, stride=2), nn.BatchNorm2d(16)
        self.dw, self.pw = Conv2dSame(16, 16, 5, stride=2, groups=16, bias=False), Conv2dSame(16, 12, 1)
        self.pool, self.fc = MaxPool2dSame(3, 2), nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.down(F.relu(self.stem(x)))))
        x = self.pool(F.relu(self.pw(self.dw(x))))
        return self.fc(x.mean((2, 3)))


class EcaModule(nn.Module):
    """timm's ECA channel attention: a Conv1d along the channels of their means."""

    def __init__(self, k=3):
        super().__init__()
        self.conv, self.gate = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False), nn.Sigmoid()

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.gate(self.conv(y)).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class EcaNet(nn.Module):
    """ECA-ResNet's block: ECA on a conv's output, added to the block's input."""

    def __init__(self):
        super().__init__()
        self.stem, self.expand = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 1)
        self.conv, self.bn, self.eca = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), EcaModule(5)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.expand(F.relu(self.stem(x))))
        x = F.relu(x + self.eca(self.bn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


class GlobalResponseNorm(nn.Module):
    """timm's GRN (ConvNeXt-V2), channels-last: each channel's spatial norm over their mean."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.linspace(-0.5, 0.5, dim))
        self.bias = nn.Parameter(torch.linspace(0.1, 0.3, dim))

    def forward(self, x):
        x_g = x.norm(p=2, dim=(1, 2), keepdim=True)
        x_n = x_g / (x_g.mean(dim=-1, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(1, 1, 1, -1), self.weight.view(1, 1, 1, -1), x * x_n)


class GrnNet(nn.Module):
    """ConvNeXt-V2's block: depthwise conv, channels-last LayerNorm, Linear, GELU, GRN, Linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.dw = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(8), nn.Linear(8, 32), nn.Linear(32, 8)
        self.grn = GlobalResponseNorm(32)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(self.grn(F.gelu(self.fc1(y)))).permute(0, 3, 1, 2)
        return self.head((x + y).mean((2, 3)))


class BlurPool2d(nn.Module):
    """timm's anti-aliased downsampling: a fixed binomial filter, depthwise, stride 2; built for
    ``channels`` it stores one copy of the filter per channel."""

    def __init__(self, channels=None):
        super().__init__()
        self.channels = channels
        f = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("filt", (f[:, None] * f[None, :])[None, None].repeat(channels or 1, 1, 1, 1),
                             persistent=False)

    def forward(self, x):
        x = F.pad(x, [1, 1, 1, 1], mode="reflect")
        if self.channels is None:
            return F.conv2d(x, self.filt.expand(x.shape[1], 1, 3, 3), stride=2, groups=x.shape[1])
        return F.conv2d(x, self.filt, stride=2, groups=self.channels)


class SpaceToDepth(nn.Module):
    def forward(self, x):
        n, c, h, w = x.size()
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(n, c * 16, h // 4, w // 4)


class BlurNet(nn.Module):
    """TResNet's stem (space to depth) and blur pools, built with and without their channels."""

    def __init__(self):
        super().__init__()
        self.s2d, self.stem = SpaceToDepth(), nn.Conv2d(48, 8, 3, padding=1)
        self.a, self.blur_a = nn.Conv2d(8, 16, 3, padding=1), BlurPool2d(16)
        self.b, self.blur_b = nn.Conv2d(16, 16, 3, padding=1), BlurPool2d()
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.stem(self.s2d(x)))
        x = self.blur_b(F.relu(self.b(self.blur_a(F.relu(self.a(x))))))
        return self.fc(x.mean((2, 3)))


class MultiplierNet(nn.Module):
    """FastViT's downsampling: depthwise convs with twice the outputs, one reading the other's."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.up1, self.bn1 = nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.BatchNorm2d(32)
        self.mix = nn.Conv2d(32, 32, 3, padding=1, groups=16)  # two channels per group, over the doubled
        self.up2, self.pw = nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=32, bias=False), nn.Conv2d(64, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(F.relu(self.stem(x)))))
        x = F.relu(self.bn1(self.up1(x)))
        x = F.relu(self.pw(self.up2(x + self.mix(x))))
        return self.fc(x.mean((2, 3)))


class StdConv2d(nn.Conv2d):
    """timm's weight-standardized conv (BiT ResNets)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
                 bias=False, eps=1e-6, device=None, dtype=None):
        padding = (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         device=device, dtype=dtype)
        self.eps = eps

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0,
                         eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2d(nn.Conv2d):
    """timm's scaled weight-standardized conv (NFNets): times gain · gamma / sqrt(fan-in)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
                 bias=True, gamma=1.0, eps=1e-6, gain_init=1.0, device=None, dtype=None):
        padding = (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         device=device, dtype=dtype)
        self.scale, self.eps = gamma * self.weight[0].numel() ** -0.5, eps
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), gain_init, device=device, dtype=dtype))

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                         eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class NormFreeNet(nn.Module):
    """NFNet's block: scaled standardized convs (one grouped), a zero-padded stem, a scalar gain on
    the residual branch, no BatchNorm; a BiT-style standardized conv beside it."""

    def __init__(self):
        super().__init__()
        self.pad, self.stem = nn.ZeroPad2d(1), ScaledStdConv2d(3, 8, 3, padding=0, gamma=1.7)
        self.conv1, self.conv2 = ScaledStdConv2d(8, 16, 1, gamma=1.7), ScaledStdConv2d(16, 16, 3, groups=4)
        self.conv3, self.bit = ScaledStdConv2d(16, 8, 1), StdConv2d(8, 8, 3)
        self.skipinit_gain = nn.Parameter(torch.tensor(0.5))
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for c in (self.conv1, self.conv2, self.conv3):
                c.gain.uniform_(0.5, 1.5)

    def forward(self, x):
        x = F.gelu(self.stem(self.pad(x)))
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        x = x + y * self.skipinit_gain
        return self.fc(F.relu(self.bit(x)).mean((2, 3)))


class GroupNormAct(nn.GroupNorm):
    """timm's GroupNorm with its activation inside (channels first in its signature)."""

    def __init__(self, num_channels, num_groups=32, eps=1e-5):
        super().__init__(num_groups, num_channels, eps)
        self.drop, self.act = nn.Identity(), nn.ReLU()

    def forward(self, x):
        return self.act(self.drop(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)))


class BitNet(nn.Module):
    """BiT's pre-activation ResNet block: weight-standardized convs, GroupNorms of group size 4 and 2."""

    def __init__(self):
        super().__init__()
        self.stem = StdConv2d(3, 8, 3)
        self.norm1, self.conv1 = GroupNormAct(8, 2), StdConv2d(8, 16, 1)
        self.norm2, self.conv2 = GroupNormAct(16, 4), StdConv2d(16, 8, 3)
        self.norm, self.fc = nn.GroupNorm(4, 8), nn.Linear(8, 5)
        with torch.no_grad():
            for gn in (self.norm1, self.norm2, self.norm):
                gn.weight.uniform_(0.5, 1.5), gn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.conv2(self.norm2(self.conv1(self.norm1(x))))
        return self.fc(F.relu(self.norm(x)).mean((2, 3)))


class PaddingModesNet(nn.Module):
    """Reflect, replicate and circular padding (a depthwise conv among them): each pads a channel
    from that channel alone, so a sliced conv pads its slice as the extracted conv does."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 24, 3, padding=2, dilation=2, padding_mode="replicate"),
                               nn.BatchNorm2d(24), nn.ReLU())
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24, padding_mode="reflect")
        self.b = nn.Sequential(nn.Conv2d(24, 16, 3, stride=2, padding=1, padding_mode="circular"), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(F.relu(self.b(F.relu(self.dw(self.a(x))))).mean((2, 3)))


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
    (ScalesNet, (1, 3, 8, 8)),
    (SameNet, (1, 3, 12, 12)),
    (EcaNet, (1, 3, 8, 8)),
    (GrnNet, (1, 3, 8, 8)),
    (BlurNet, (1, 3, 32, 32)),
    (MultiplierNet, (1, 3, 8, 8)),
    (NormFreeNet, (1, 3, 8, 8)),
    (BitNet, (1, 3, 8, 8)),
    (PaddingModesNet, (1, 3, 8, 8)),
], ids=["custom", "densenet121", "squeezenet1_1", "googlenet", "shufflenet_v2", "convnext_tiny", "splits",
        "scales", "same_padding", "eca", "grn", "blur_pool", "multiplier", "standardized", "group_norm",
        "padding_modes"])
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
        _assert_exact_at_a_vertex(sn, choice, x)




def _assert_exact_at_a_vertex(sn: Supernet, choice: list, x: torch.Tensor) -> None:
    """The search's relaxation at a 0/1 point (an architecture step as τ → 0): every group at full
    width with a mask keeping the chosen widths computes what the chosen widths compute, in eval
    mode and with batch statistics (BatchNorms training; dropout stays off, its draws depend on
    the width), so the architecture step scores the network that extraction would cut out."""
    with torch.no_grad():
        for p in sn.anet.parameters():  # no zero-initialised term may hide a masked channel
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    for mode in (False, True):
        sn.anet.eval()
        for m in sn.anet.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train(mode)
        with torch.no_grad():
            sn.set_widths(choice)
            hard = sn.anet.small(x)
            for grp, w in zip(sn.groups, sn.widths_of(choice)):
                grp.mask_to(w)
            soft = sn.anet.small(x)
        sn.clear_masks()
        # float32 rounding over a deep network: on an AMD EPYC, GoogLeNet with batch statistics read
        # 0.2773 masked where the cut network read 0.2774 (1.0e-4 apart at a largest logit of 3.5),
        # beyond 1e-5 of the largest; a mask that lets a channel through is off by tenths
        assert torch.allclose(soft, hard, rtol=1e-4, atol=1e-4 * float(hard.abs().max())), \
            (mode, float((soft - hard).abs().max()), float(hard.abs().max()))


def test_same_padding_follows_the_input_size_in_both_networks_and_after_extraction():
    torch.manual_seed(0)
    model = SameNet().eval()
    anet = to_adjoint(model, alpha=2, input_shape=(1, 3, 12, 12)).eval()
    net = extract_small(anet)
    assert type(net.get_submodule("down")) is Conv2dSame  # the original class: it pads as it runs
    for side in (12, 13, 17):  # the padding of each side differs (even, odd, another size)
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            big, small = anet(x)
            assert torch.allclose(big, model(x), atol=1e-5) and torch.allclose(net(x), small, atol=1e-5)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNorm with its activation inside."""

    def __init__(self, n):
        super().__init__(n)
        self.drop, self.act = nn.Identity(), nn.ReLU()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


def test_deploy_form_folds_timm_batchnorms_and_those_after_same_convs():
    """torch's fuse retraced the network with its default tracer and matched exact classes: it
    folded no BatchNormAct2d (traced into a functional batch norm) and nothing at all in a network
    with a "same" conv (untraceable)."""
    from dan.deploy import deploy_form

    torch.manual_seed(0)
    model = SameNet()
    model.bn, model.pw = BatchNormAct2d(16), nn.Sequential(Conv2dSame(16, 12, 1), nn.BatchNorm2d(12))
    with torch.no_grad():  # statistics that are not the identity, so folding matters
        for bn in (model.bn, model.pw[1]):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    net = extract_small(to_adjoint(model.eval(), alpha=2, input_shape=(1, 3, 12, 12)).eval())
    folded = deploy_form(net, "contiguous")
    assert not [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not [n for n in folded.graph.nodes if n.op == "call_function" and "batch_norm" in str(n.target)]
    assert type(folded.get_submodule("down")) is Conv2dSame and isinstance(folded.get_submodule("bn"), nn.Sequential)
    x = torch.randn(2, 3, 13, 13)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5)


def test_standardized_convs_keep_the_big_network_and_standardize_the_small_weight_over_its_fan_in():
    torch.manual_seed(0)
    model = NormFreeNet().eval()
    anet = to_adjoint(model, alpha=2, input_shape=(1, 3, 8, 8)).eval()
    x = torch.randn(2, 3, 8, 8)
    net = extract_small(anet)
    with torch.no_grad():
        big, small = anet(x)
        assert torch.allclose(big, model(x), atol=1e-6) and torch.allclose(net(x), small, atol=1e-6)
        assert torch.allclose(dan.adjoint.extract_big(anet)(x), big, atol=1e-6)
    bit = BitNet().eval()
    anet = to_adjoint(bit, alpha=2, input_shape=(1, 3, 8, 8)).eval()
    with torch.no_grad():  # the GroupNorms keep their group size: 16 channels in 4 groups -> 8 in 2
        assert torch.allclose(anet(x)[0], bit(x), atol=1e-6) and torch.allclose(extract_small(anet)(x), anet(x)[1])
    assert extract_small(anet).get_submodule("norm2").num_groups == 2
    conv3 = net.get_submodule("conv3")  # 16 -> 8 in the big network; reads 8 of the 16 in the small
    assert type(conv3) is ScaledStdConv2d and conv3.in_channels == 8 and conv3.gain.shape[0] == 8
    assert conv3.scale == pytest.approx(8 ** -0.5) and model.conv3.scale == pytest.approx(16 ** -0.5)


def test_a_view_that_writes_the_channel_count_as_a_constant_is_refused():
    class Constant(EcaModule):
        def forward(self, x):
            y = self.gate(self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1)))
            return x * y.view(x.shape[0], 16, 1, 1)  # 16: the small network has fewer

    model = EcaNet()
    model.eca = Constant()
    with pytest.raises(dan.UnsupportedModelError, match="channel count as a constant"):
        to_adjoint(model, input_shape=(1, 3, 8, 8))


def test_blur_pools_follow_the_small_width_and_space_to_depth_stays_on_the_input():
    model = BlurNet().eval()
    anet = to_adjoint(model, input_shape=(1, 3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(anet(x)[0], model(x))  # the filter expanded: the same sums, bit for bit
    assert model.blur_a.filt.shape[0] == 16  # the user's model is left as it was
    net = extract_small(anet)  # one filter per channel again: a kernel of known shape (ONNX export)
    assert [(net.get_submodule(b).channels, net.get_submodule(b).filt.shape[0]) for b in ("blur_a", "blur_b")] \
        == [(anet.group(g).width,) * 2 for g in ("a", "b")]
    with torch.no_grad():
        assert torch.equal(net(x), anet(x)[1])
    late = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3), SpaceToDepth(), nn.Flatten(), nn.Linear(256, 5))
    with pytest.raises(dan.UnsupportedModelError, match="only where both networks share"):
        to_adjoint(late, input_shape=(1, 3, 12, 12))  # after a conv with a small path


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
        assert r.deploy_rel_err <= coverage.RTOL and r.onnx == "torchscript", (name, r)  # files a run writes
    assert rows["swin_t"].status == "refused" and rows["swin_t"].reason  # a clear reason, not a crash
    page = coverage.markdown(list(rows.values()))
    assert f"{len(FAST)} of {len(FAST) + 1} pass" in page and "| torchvision | swin_t | refused |" in page
    assert f"Memory estimate exact on {len(FAST)} of {len(FAST)} passing models." in page
    assert (f"`small.pt2` loaded back equal the extracted network on {len(FAST)} of {len(FAST)} passing models; "
            f"`small.onnx` verified in ONNX Runtime on {len(FAST)} of {len(FAST)}.") in page


TIMM_FAST = ["mixnet_s", "ghostnet_100", "convnext_atto", "efficientnet_b0", "dpn68",
             "tf_efficientnet_b0", "ecaresnet26t", "convnextv2_atto", "tresnet_m", "nf_resnet26"]


def test_coverage_of_a_fast_subset_of_the_timm_list():
    pytest.importorskip("timm")
    rows = coverage.run_zoo(coverage.timm_models(TIMM_FAST), "timm", deploy=False)  # deploy: tools/coverage.py
    assert [(r.name, r.status) for r in rows] == [(n, "pass") for n in TIMM_FAST], [r.reason for r in rows]
    # DAN's soft masks at a 0/1 point are the network they stand for: LayerNorms (ConvNeXt), GRN
    # (ConvNeXt-V2), weight standardization (NFNet), splits (MixNet), ...
    assert {r.name: r.vertex_rel_err for r in rows if not r.vertex_rel_err <= coverage.VERTEX_RTOL} == {}


def test_a_deploy_failure_is_its_own_column_and_the_conversion_still_passes(monkeypatch):
    import dan.deploy

    def broken(*args, **kwargs):
        raise RuntimeError("no exporter for this op")

    monkeypatch.setattr(dan.deploy, "save_deployable", broken)
    row = coverage.run_one("torchvision", "resnet18", lambda: torchvision.models.resnet18(num_classes=10),
                           (1, 3, 64, 64))
    assert row.status == "pass" and row.onnx == "deploy failed: RuntimeError: no exporter for this op"
    page = coverage.markdown([row])
    assert "equal the extracted network on 0 of 1 passing models" in page and "deploy failed" in page


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
