"""Adjoint layers: one set of weights, a big path and a sliced small path.

Each layer is a subclass of its ``torch.nn`` counterpart, so the big network keeps the original
parameter names and behaviour; ``forward(x, small=True)`` runs the small network's version:

* :class:`AdjointConv2d` computes ``conv(x2, W[:c_out, :c_in] ⊙ r_β)`` on the *sliced* input —
  never a full-width conv with zeroed channels, which costs as much as the big network.
* :class:`AdjointBatchNorm2d` holds the small network's own BatchNorm (statistics and affine
  parameters), sized for the widest width the small path may take and sliced to the current one.
* :class:`AdjointLinear` reads the leading input features; a hidden linear layer (VGG) also
  narrows its outputs; the classifier keeps all of its outputs (its group is fixed).

A layer that reads a channel concatenation (DenseNet, Inception, SqueezeNet) points to
:class:`~dan.graph.Segments` instead: the small tensor holds each part's leading channels, so the
layer selects those input channels (``index_select``) rather than a leading slice.

Widths come from the :class:`~dan.graph.WidthGroup` objects the layer points to, so DAN search can
change them between steps without rebuilding anything. When a group carries a soft channel mask
(DAN), the last affine layer writing the group multiplies its output by it.
"""

from __future__ import annotations

import copy
import zlib
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from dan.graph import SAME_PADDING_CONVS, STANDARDIZED_CONVS, Segments, WidthGroup


def rbeta_mask(shape: tuple, beta: float, seed: int, name: str) -> Optional[torch.Tensor]:
    """The fixed random mask r_β: exactly ``round(β·n)`` of the ``n`` entries are zero.

    Drawn from a generator seeded by ``seed`` and the layer name, so it does not depend on the
    order in which layers are converted or on the global RNG.
    """
    if beta <= 0:
        return None
    n = 1
    for s in shape:
        n *= s
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    mask = torch.ones(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[: int(round(beta * n))]] = False
    return mask.view(shape)


class AdjointConv2d(nn.Conv2d):
    in_group: WidthGroup
    out_group: WidthGroup
    same_padding = False
    original_class = nn.Conv2d
    # weight standardization (timm's StdConv2d: "std"; ScaledStdConv2d: "scaled", with a gain per
    # output channel and gamma / sqrt(fan-in)); the small path standardizes its slice of the weight
    # over its own fan-in, as a standardized conv of its size would
    standardize = ""
    eps = 0.0
    gamma = 1.0

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, in_group: WidthGroup, out_group: WidthGroup,
                  *, beta: float = 0.0, seed: int = 0, name: str = "", apply_mask: bool = False):
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        new.weight = conv.weight  # the very same parameters: big and small share them
        new.bias = conv.bias
        new.train(conv.training)
        new.in_group, new.out_group = in_group, out_group
        new.apply_mask = apply_mask
        # TensorFlow-style "same" padding computed from the input's size (timm's Conv2dSame): both
        # paths pad so; extraction rebuilds the original class (``original_class``)
        name_of_class = type(conv).__name__
        dynamic_same = name_of_class in STANDARDIZED_CONVS and conv.__dict__.get("same_pad")
        if name_of_class in SAME_PADDING_CONVS or dynamic_same:
            new.same_padding = True
        if name_of_class in SAME_PADDING_CONVS or name_of_class in STANDARDIZED_CONVS:
            new.original_class = type(conv)
        if name_of_class in STANDARDIZED_CONVS:
            new.standardize, new.eps = STANDARDIZED_CONVS[name_of_class], conv.eps
            if new.standardize == "scaled":
                new.gain, new.scale = conv.gain, conv.scale
                new.gamma = conv.scale * conv.weight[0].numel() ** 0.5
        new.register_buffer("rbeta", rbeta_mask(new.small_weight_shape(), beta, seed, name))
        return new

    def small_weight_shape(self) -> tuple:
        wi, wo = self.in_group.width, self.out_group.width
        per_group_in = self.in_channels // self.groups
        cin = wi if self.groups == 1 else per_group_in
        return (wo, cin) + tuple(self.kernel_size)

    def small_groups(self) -> int:
        if self.groups == 1:
            return 1
        return self.out_group.width // (self.out_channels // self.groups)

    def out_index(self):
        """The big output channels the small conv computes: leading ones, or (a depthwise conv
        over a concatenation) each part's leading ones."""
        return self.out_group.index(self.weight.device)

    def small_raw_weight(self) -> torch.Tensor:
        """The small conv's stored weight: the big one's slice, r_β applied (before any
        standardization, so that an extracted standardized conv holding it computes the same)."""
        if self.groups > 1:
            w = self.weight[self.out_index()]
        else:
            w = self.weight[: self.out_group.width][:, self.in_group.index(self.weight.device)]
        if self.rbeta is not None:
            if tuple(self.rbeta.shape) != tuple(w.shape):
                raise RuntimeError(f"r_beta mask of shape {tuple(self.rbeta.shape)} does not fit "
                                   f"widths {tuple(w.shape)}: masks and changing widths don't mix")
            w = w * self.rbeta
        return w

    def small_weight(self) -> torch.Tensor:
        """The weight the small conv convolves with."""
        w = self.small_raw_weight()
        if not self.standardize:
            return w
        gain = self.gain[self.out_index()] if self.standardize == "scaled" else None
        mask = self.in_group.mask if self.groups == 1 else None
        if mask is not None:
            return self._masked_standardized(w, mask, gain)
        return self._standardized(w, gain, self.small_scale(w))

    def small_scale(self, w: torch.Tensor) -> float:
        """ScaledStdConv2d's gamma / sqrt(fan-in), for the small weight's own fan-in."""
        return self.gamma * w[0].numel() ** -0.5

    def _masked_standardized(self, w: torch.Tensor, mask: torch.Tensor, gain: Optional[torch.Tensor]) -> torch.Tensor:
        """Weight standardization under a soft mask on the input channels (DAN's architecture
        step): each input channel's weights count in the statistics and in the fan-in as much as
        its mask keeps of it, so at a 0/1 mask the weight is standardized over the kept inputs
        alone, as the extracted conv does; unweighted, the masked inputs' weights would shift the
        statistics of a conv the search will never extract."""
        mask = mask.to(w.dtype)  # a float32 mask's fan_in.rsqrt() was off by 3e-8 on a float64 weight
        fan_in = mask.sum() * (w[0, 0].numel())
        mean, var = masked_moments(w, mask.view(1, -1, 1, 1), (1, 2, 3), fan_in)
        w = (w - mean) * torch.rsqrt(var + self.eps)
        if gain is None:
            return w
        return w * (gain * self.gamma * fan_in.rsqrt()).view(-1, 1, 1, 1)

    def big_weight(self) -> torch.Tensor:
        if not self.standardize:
            return self.weight
        if self.standardize == "scaled":
            return self._standardized(self.weight, self.gain, self.scale)
        return self._standardized(self.weight, None, 1.0)

    def _standardized(self, w: torch.Tensor, gain: Optional[torch.Tensor], scale: float) -> torch.Tensor:
        """timm's weight standardization: each output channel's weights to zero mean and unit
        (biased) variance, times gain · scale for ScaledStdConv2d."""
        factor = (gain * scale).view(-1) if gain is not None else None
        return F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, weight=factor, training=True,
                            momentum=0.0, eps=self.eps).reshape_as(w)

    def _oneDNN_workaround(self, x: torch.Tensor) -> bool:
        """Where the bug below bites: a strided 1×1 conv, a gradient to compute, a channels-last
        input with :func:`pointwise_bug_channels` channels (elsewhere the usual kernel, bit for bit)."""
        return (pointwise_stride(self) and torch.is_grad_enabled() and x.ndim == 4
                and pointwise_bug_channels(x.shape[1])
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor, small: bool = False) -> torch.Tensor:
        if self.same_padding:
            x = same_padding(x, self.kernel_size, self.stride, self.dilation)
        stride, subsampled = self.stride, self._oneDNN_workaround(x)
        if subsampled:
            # Subsample, then a 1×1 convolution at stride 1: the same sums, and it avoids a
            # oneDNN bug in PyTorch 2.14: the weight gradient of a channels-last 1×1 stride-2
            # convolution with few input channels (pointwise_bug_channels: a sliced small path's 6
            # or 7 of 8 on an AVX2 AMD EPYC; 2-15, 8 included, on an AVX-512 Xeon) corrupts the
            # heap ("double free or corruption").
            x, stride = x[:, :, :: self.stride[0], :: self.stride[1]], 1
        if not small:
            if subsampled:  # a pointwise conv without padding, so no padding mode either
                return F.conv2d(x, self.big_weight(), self.bias, 1, 0, self.dilation, self.groups)
            return self._conv_forward(x, self.big_weight(), self.bias)
        b = self.bias[self.out_index()] if self.bias is not None else None
        padding = self.padding
        if self.padding_mode != "zeros":  # reflect / replicate / circular: pad, then convolve (as nn.Conv2d)
            x, padding = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        y = F.conv2d(x, self.small_weight(), b, stride, padding, self.dilation, self.small_groups())
        if self.apply_mask and self.out_group.mask is not None:
            y = y * self.out_group.mask.view(1, -1, 1, 1)
        return y


def same_padding(x: torch.Tensor, kernel: tuple, stride: tuple, dilation: tuple) -> torch.Tensor:
    """Pad ``x`` as TensorFlow's "SAME" convolution does: zeros so that the output has
    ``ceil(size / stride)`` pixels, half of them before, the odd one after (timm's ``pad_same``)."""
    pads = []
    for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(kernel), reversed(stride), reversed(dilation)):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def pointwise_stride(conv: nn.Conv2d) -> bool:
    """A strided 1×1 convolution without padding (a ResNet downsample)."""
    return (tuple(conv.kernel_size) == (1, 1) and conv.padding in ((0, 0), "valid")
            and tuple(conv.stride) != (1, 1))


def pointwise_bug_channels(channels: int) -> bool:
    """Input channels at which the weight gradient of a channels-last strided 1×1 convolution can
    corrupt the heap in PyTorch 2.14's oneDNN: fewer than 16, or not a multiple of 8.

    Measured (a lone strided 1×1 ``Conv2d`` with c input channels, forward and backward, 10 steps):
    on AVX2-only CPUs 3, 5, 6 and 7 channels; on an AVX-512 Xeon (thirty-sixth session, found by
    ``tools/fuzz.py``: a valid config with batch 7 crashed) every c from 2 to 15, 8 included, e.g.
    at 56×56 inputs at any batch, at 16×16 at batch 7 on two threads, while 1, 16, 17, 20, 23, 24,
    25, 31, 32, 33, 40 and 64 ran. The rule keeps the AVX2 finding for the c above 16.
    """
    return channels < 16 or channels % 8 != 0


def channels_last_safe(model: nn.Module, device: torch.device | str | None = None) -> bool:
    """Whether training ``model`` channels-last on ``device`` steers clear of PyTorch 2.14's oneDNN
    heap corruption on AVX2-only CPUs; where False the model trains in the default layout (NCHW),
    which computes the same numbers.

    * On a CPU without AVX-512 (``torch.backends.cpu.get_cpu_capability()`` is ``AVX2`` or less):
      always False. The isolated case is the one :class:`AdjointConv2d` works around (the weight
      gradient of a channels-last strided 1×1 conv with 3, 5, 6 or 7 input channels), but with that
      worked around, full searches over other sampled widths still corrupted the heap in a
      channels-last convolution backward (suite seeds 3 and 4 at 10 % FLOPs, within a minute, an
      AMD EPYC; each conv of the failing step passed alone, 20-200 times). In NCHW the same searches
      ran, and at one thread NCHW was no slower there (65 s against 71 s for 40 search batches).
    * Elsewhere (AVX-512 CPUs, where channels-last measured faster and never crashed, and GPUs):
      False only for a model with a trained plain ``nn.Conv2d`` that is a strided 1×1 convolution
      with :func:`pointwise_bug_channels` input channels (8 included: a width-8 ResNet's first
      downsample trains in NCHW).
    """
    if torch.device(device or "cpu").type == "cpu" and not cpu_has_avx512():
        return False
    return not any(type(m) is nn.Conv2d and pointwise_stride(m) and pointwise_bug_channels(m.in_channels)
                   and m.weight.requires_grad for m in model.modules())


def channels_last_runs(model: nn.Module, input_shape: tuple, device=None) -> bool:
    """Whether to train ``model`` channels-last: :func:`channels_last_safe`, and the model runs in
    that layout at all (:func:`dan.deploy.layout_for`: a ``view`` flatten does not)."""
    from dan.deploy import layout_for

    return channels_last_safe(model, device) and layout_for(model, input_shape) == "channels_last"


def cpu_has_avx512() -> bool:
    """Whether PyTorch's CPU kernels run with AVX-512 here (``AVX512``, ``AVX512_VNNI``, ...)."""
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


class AdjointBatchNorm2d(nn.BatchNorm2d):
    group: WidthGroup

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, group: WidthGroup, *, apply_mask: bool = False):
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
        new.weight, new.bias = bn.weight, bn.bias
        for k in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(new, k, getattr(bn, k))
        new.train(bn.training)
        new.group = group
        new.apply_mask = apply_mask
        # A BatchNorm subclass that runs more after normalizing (timm's BatchNormAct2d: drop, act)
        # keeps those modules, under the same names; extraction rebuilds the original class
        # from a weightless template.
        new.post = [k for k in ("drop", "act") if isinstance(getattr(bn, k, None), nn.Module)]
        for k in new.post:
            new.add_module(k, getattr(bn, k))
        new.__dict__["template"] = copy.deepcopy(bn).to("meta")
        # The small network's own BN starts as a copy of the big one's leading entries: a fresh BN
        # for a fresh model, the pretrained statistics when a trained model is converted.
        # on its device and in its floating type (a float64 model's small BN was float32); one with
        # neither affine parameters nor running statistics holds no tensor (a bare StopIteration
        # here): it normalizes each batch by its own statistics, and so does its small twin
        ref = next((t for t in list(bn.parameters()) + list(bn.buffers()) if t.is_floating_point()), None)
        device, dtype = (ref.device, ref.dtype) if ref is not None else (None, None)
        small = nn.BatchNorm2d(group.max_width, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                               device=device, dtype=dtype)
        with torch.no_grad():
            # the leading max_width entries of each part (one part: a leading slice)
            w = group.max_index(device) if isinstance(group, Segments) else slice(0, group.max_width)
            if bn.affine:
                small.weight.copy_(bn.weight[w])
                small.bias.copy_(bn.bias[w])
            if bn.track_running_stats:
                small.running_mean.copy_(bn.running_mean[w])
                small.running_var.copy_(bn.running_var[w])
        small.train(bn.training)
        new.small = small
        return new

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        for k in self.post:
            y = getattr(self, k)(y)
        return y

    def forward(self, x: torch.Tensor, small: bool = False) -> torch.Tensor:
        if not small:
            return self._post(super().forward(x))
        s = self.small
        # Same update rule as nn.BatchNorm2d; slicing the buffers updates the leading entries
        # in place (as slimmable networks do). A concatenation's entries are gathered, and the
        # updated statistics written back.
        w = self.group.index(x.device, layout="max")
        factor = 0.0 if s.momentum is None else s.momentum
        if self.training and s.track_running_stats:
            s.num_batches_tracked.add_(1)
            factor = 1.0 / float(s.num_batches_tracked) if s.momentum is None else s.momentum
        use_batch = self.training or not s.track_running_stats
        mean = s.running_mean[w] if s.track_running_stats else None
        var = s.running_var[w] if s.track_running_stats else None
        y = F.batch_norm(x, mean, var, s.weight[w] if s.affine else None, s.bias[w] if s.affine else None,
                         use_batch, factor, s.eps)
        if isinstance(w, torch.Tensor) and mean is not None and use_batch:
            with torch.no_grad():
                s.running_mean[w] = mean
                s.running_var[w] = var
        y = self._post(y)
        if self.apply_mask and self.group.mask is not None:
            y = y * self.group.mask.view(1, -1, 1, 1)
        return y


class AdjointLinear(nn.Linear):
    in_group: WidthGroup
    out_group: WidthGroup
    in_mult: int

    @classmethod
    def from_linear(cls, lin: nn.Linear, in_group: WidthGroup, out_group: WidthGroup, in_mult: int,
                    *, beta: float = 0.0, seed: int = 0, name: str = "", apply_mask: bool = False):
        new = cls(lin.in_features, lin.out_features, lin.bias is not None, device="meta")
        new.weight, new.bias = lin.weight, lin.bias
        new.train(lin.training)
        new.in_group, new.out_group, new.in_mult = in_group, out_group, in_mult
        new.apply_mask = apply_mask
        new.register_buffer("rbeta", rbeta_mask(new.small_weight_shape(), beta, seed, name))
        return new

    def small_weight_shape(self) -> tuple:
        return (self.out_group.width, self.in_group.width * self.in_mult)

    def small_weight(self) -> torch.Tensor:
        wo, _ = self.small_weight_shape()
        w = self.weight[:wo][:, self.in_group.index(self.weight.device, mult=self.in_mult)]
        if self.rbeta is not None:
            w = w * self.rbeta
        return w

    def forward(self, x: torch.Tensor, small: bool = False) -> torch.Tensor:
        if not small:
            return F.linear(x, self.weight, self.bias)
        wo = self.out_group.width
        y = F.linear(x, self.small_weight(), self.bias[:wo] if self.bias is not None else None)
        if self.apply_mask and self.out_group.mask is not None:
            y = y * self.out_group.mask
        return y


class AdjointLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels: the last dimension (ConvNeXt's blocks, channels-last), or dim 1
    for a ``LayerNorm2d`` (``channels_first``: permute, normalize, permute back). The small path
    normalizes over its own channels with the leading entries of the same affine parameters: a
    LayerNorm keeps no running statistics, so nothing needs a small twin. Under a soft channel
    mask it weights the statistics by the mask (:func:`masked_layer_norm`)."""

    group: WidthGroup

    @classmethod
    def from_ln(cls, ln: nn.LayerNorm, group, *, channels_first: bool, apply_mask: bool = True):
        new = cls(ln.normalized_shape, ln.eps, ln.elementwise_affine, bias=ln.bias is not None, device="meta")
        new.weight, new.bias = ln.weight, ln.bias
        new.train(ln.training)
        new.group, new.channels_first, new.apply_mask = group, channels_first, apply_mask
        new.__dict__["original_class"] = type(ln)  # what extraction rebuilds (e.g. LayerNorm2d)
        return new

    def index(self):
        return self.group.index(self.weight.device if self.weight is not None else None)

    def forward(self, x: torch.Tensor, small: bool = False) -> torch.Tensor:
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        if small:
            i = self.index()
            weight = self.weight[i] if self.weight is not None else None
            bias = self.bias[i] if self.bias is not None else None
            mask = self.group.mask
            if mask is None:
                y = F.layer_norm(x, (self.group.width,), weight, bias, self.eps)
            else:
                y = masked_layer_norm(x, mask, weight, bias, self.eps)
                if self.apply_mask:
                    y = y * mask
        else:
            y = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2) if self.channels_first else y


def masked_moments(x: torch.Tensor, weight: torch.Tensor, dims: tuple, total: torch.Tensor):
    """Mean and (biased) variance of ``x`` over ``dims``, each entry counted ``weight`` times (a soft
    channel mask, broadcast against ``x``), ``total`` the weights' sum over those dims."""
    mean = (x * weight).sum(dims, keepdim=True) / total
    return mean, (weight * (x - mean) ** 2).sum(dims, keepdim=True) / total


def masked_layer_norm(x: torch.Tensor, mask: torch.Tensor, weight: Optional[torch.Tensor],
                      bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """LayerNorm over the last dim with each channel's statistics weighted by its soft mask (DAN's
    architecture step): the mean and the variance of the channels the mask keeps. At a 0/1 mask
    it is the LayerNorm of the kept channels alone, which the extracted network computes; an
    unweighted LayerNorm over the mask's width would count the masked channels' zeros and so
    normalize a network the search will never extract (ConvNeXt's logits 35 % off at a vertex)."""
    mean, var = masked_moments(x, mask, (-1,), mask.sum())
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


class AdjointGroupNorm(nn.GroupNorm):
    """GroupNorm (BiT ResNets; timm's GroupNormAct, whose dropout and activation it keeps). The small
    path keeps the group *size* (the graph makes its width a multiple of it), so each of its groups
    is one of the big network's, normalized over the same channels, with the leading entries of
    the same affine parameters; nothing needs a small twin."""

    group: WidthGroup

    @classmethod
    def from_gn(cls, gn: nn.GroupNorm, group, *, apply_mask: bool = True):
        new = cls(gn.num_groups, gn.num_channels, gn.eps, gn.affine, device="meta")
        new.weight, new.bias = gn.weight, gn.bias
        new.train(gn.training)
        new.group, new.apply_mask = group, apply_mask
        new.post = [k for k in ("drop", "act") if isinstance(getattr(gn, k, None), nn.Module)]
        for k in new.post:
            new.add_module(k, getattr(gn, k))
        new.__dict__["template"] = copy.deepcopy(gn).to("meta")  # what extraction rebuilds
        return new

    @property
    def group_size(self) -> int:
        return self.num_channels // self.num_groups

    def forward(self, x: torch.Tensor, small: bool = False) -> torch.Tensor:
        if small:
            w = self.group.width
            i = self.group.index(self.weight.device if self.weight is not None else None)
            y = F.group_norm(x, w // self.group_size, self.weight[i] if self.weight is not None else None,
                             self.bias[i] if self.bias is not None else None, self.eps)
            if self.apply_mask and self.group.mask is not None:
                y = y * self.group.mask.view(1, -1, 1, 1)
        else:
            y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        for k in self.post:
            y = getattr(self, k)(y)
        return y


class ChannelSlice(nn.Module):
    """The small path's view of a per-channel tensor read from an attribute (ConvNeXt's layer
    scale): its entries for the small channels along ``dim``. One that is added to a feature map
    (``masked``: GRN's bias) is multiplied by the channels' soft mask when they carry one, so a
    masked channel stays zero, as the extracted network, which has no such channel, computes.
    Lives in the adjoint network only; extraction stores the sliced tensor in the attribute itself."""

    def __init__(self, group, dim: int, masked: bool = False):
        super().__init__()
        self.group, self.dim, self.masked = group, dim, masked

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t[(slice(None),) * self.dim + (self.group.index(t.device),)]
        mask = self.group.mask if self.masked else None
        if mask is None:
            return t
        return t * mask.view([-1 if d == self.dim else 1 for d in range(t.ndim)])


class ChannelMean(nn.Module):
    """The small path's mean over the channels, keeping the dim (ConvNeXt-V2's GRN divides by it):
    under a soft channel mask, the sum over the channels divided by the mask's sum, so that at a
    0/1 mask it is the mean of the kept channels (the masked ones are zeros), as in the extracted
    network; the plain mean otherwise. Lives in the adjoint network only; extraction keeps the
    traced mean."""

    def __init__(self, channels, dim: int):
        super().__init__()
        self.channels, self.dim = channels, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.channels.mask
        if mask is None:
            return x.mean(self.dim, keepdim=True)
        return x.sum(self.dim, keepdim=True) / mask.sum()


class ChannelRange(nn.Module):
    """The small path's version of a split or a channel slice whose sizes the graph holds for the
    big network (``torch.split(x, [48, 48, 96], 1)``, ``x[:, :c]``): the small tensor is cut at
    the same fractions of its own width (whole channels: the groups' quanta see to it), or, when
    the cuts fall between the parts of a concatenation, after each part's small width. Lives in
    the adjoint network only; extraction writes the small sizes into the graph.

    ``source``: the group whose channels a cut at fractions reads (one part, of ``coef`` times the
    group's width: 2 for a chunk of ShuffleNet's shuffled concatenation). Under its soft channel
    mask (DAN's architecture step: ``mask[c]`` is the probability that the width exceeds ``c``)
    each piece is the expectation over the widths of the piece a network of that
    width cuts, padded to the piece's width here: at a 0/1 mask exactly the extracted network's
    piece. Cut at fractions of the full width instead, a piece would hold other channels than any
    extracted network's (Res2Net's scales: logits 3-14 % off at a vertex)."""

    def __init__(self, cuts: list, dim: int, pieces: bool, channels: Optional["Segments"] = None,
                 source: Optional["WidthGroup"] = None, coef=1):
        super().__init__()
        self.cuts, self.dim, self.pieces, self.channels = list(cuts), dim, pieces, channels
        self.source, self.coef = source, coef

    def bounds(self, width: int) -> list:
        """(start, end) of every piece in a small tensor ``width`` channels wide."""
        return cut_bounds(self.cuts, width, self.channels)

    def forward(self, x: torch.Tensor):
        mask = self.source.mask if self.source is not None else None
        if mask is None:
            out = [x.narrow(self.dim, a, b - a) for a, b in self.bounds(x.shape[self.dim])]
        else:
            out = self._expected_pieces(x, mask)
        return tuple(out) if self.pieces else out[0]

    def _expected_pieces(self, x: torch.Tensor, mask: torch.Tensor) -> list:
        chance = mask - F.pad(mask[1:], (0, 1))  # P(width == c + 1)
        widths = (torch.nonzero(chance.detach()).flatten() + 1).tolist()
        out = []
        for (lo, hi), cut in zip(self.bounds(x.shape[self.dim]), self.cuts):
            piece = 0
            for w in widths:
                a, b = cut_bounds([cut], int(self.coef * w))[0]
                pad = [0, 0] * (x.ndim - 1 - self.dim) + [0, (hi - lo) - (b - a)]
                piece = piece + chance[w - 1] * F.pad(x.narrow(self.dim, a, b - a), pad)
            out.append(piece)
        return out


def cut_bounds(cuts: list, width: int, channels: Optional["Segments"] = None) -> list:
    """Small (start, end) of each cut: fractions of ``width``, or part indices of ``channels``."""
    if channels is None:
        return [(int(a * width), int(b * width)) for a, b in cuts]
    ends = [0]
    for g, c in channels.parts:
        ends.append(ends[-1] + int(c * g.width))
    return [(ends[i], ends[j]) for i, j in cuts]
