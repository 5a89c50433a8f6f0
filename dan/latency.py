"""A latency model of this device: per-layer lookup tables plus a fitted whole-network correction.

FLOPs are a poor proxy for time on a CPU at batch 1 (per-operator overhead, channel counts that
defeat vectorized kernels, memory-bound elementwise work). As ProxylessNAS and FBNet do, this
module measures what the device does instead:

1. **Tables.** For every conv / linear layer of the search space's small network, the layer is
   rebuilt on its own (same kernel, stride, padding, dilation, groups rule and input size, bias on
   as after BatchNorm folding) at every pair of candidate widths of its input and output side, and
   timed at ``batch`` with ``threads`` intra-op threads, in every memory format of the runtime
   (:data:`FORMATS`: eager PyTorch channels-last and NCHW, one table each). A side that is not one
   width group (a concatenation, a shuffle) gets a grid of :data:`SIDE_POINTS` widths over its range
   and is interpolated.
2. **Correction.** What the tables miss (ReLUs and adds, pooling, the framework's per-call cost,
   cache effects between layers) is fitted on whole networks: ``ms ≈ w_lut·Σ table + w_act·A + w_0``
   where ``A`` is the number of output activations of the table layers (memory traffic), by least
   squares over :data:`CALIBRATION` architectures drawn from the space plus the narrowest and the
   widest. Both terms are linear in the table entries and the widths, so the expected latency under
   the search's width distributions is exact and differentiable (:meth:`LatencyModel.expected`).
3. **The faster format.** A network is deployed in whichever memory format runs it faster (thin
   networks at batch 1 can be faster in NCHW, wide ones in channels-last), so a prediction is the
   smaller of the formats' predictions, and a measured network is timed in each and counts in its
   fastest (:func:`measure_networks`). Under a distribution the expectation of that minimum is
   approximated by the minimum of the formats' expectations (exact on a one-hot distribution).

**Measuring on a noisy shared machine.** Every timing is the median over ``rounds`` rounds; in
each round the entries are visited in a fresh random order (so a burst of load hits entries alike,
not one table in a row), each entry called ``inner`` times back to back after a warm-up. A space
whose entries would hold more than :data:`PHASE_BYTES` at once is timed in several such phases,
each scaled by the reference to one level (:func:`time_bounded`). The thread
count is pinned for the measurement (``torch.set_num_threads``, ONNX Runtime's intra-op threads)
and restored after. Runtimes: ``torch`` — eager PyTorch on :func:`dan.deploy.deploy_form` networks
(BatchNorm folded; channels-last or NCHW, whichever is faster); ``onnxruntime`` — every layer and
network exported to ONNX and run in ONNX Runtime, as ``small.onnx`` is deployed.

**Cache.** A model is stored as JSON under ``$DAN_CACHE/latency`` (default ``~/.cache/dan``), keyed
by the device (CPU model), runtime, thread count, batch, PyTorch version and the network's layer
geometry and candidates; any change gives another key, so the table is rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from dan.checkpoint import atomic_write, write_json
from dan.errors import spelt
from dan.supernet import _side  # a side's width: the sum of its parts, as in the cost table
from dan.timing import OtherLoad

RUNTIMES = ("torch", "onnxruntime")
# the memory formats a runtime's networks are timed in; a network counts in its fastest. Eager
# PyTorch: channels-last is faster for wide networks, NCHW for thin ones at small batches on some
# CPUs (an AVX2-only AMD EPYC, batch 1: the narrowest demo network 0.84 ms NCHW against 1.04 ms
# channels-last, the widest 2.36 against 2.00). ONNX Runtime chooses its own layouts.
FORMATS = {"torch": ("channels_last", "contiguous"), "onnxruntime": ("contiguous",)}
# a found network against the widest: two networks only, so many longer rounds (a second or more in
# all) keep a transient slow spell, which slows thin networks more than wide ones, out of the median
FINAL = {"rounds": 60, "inner": 5}
SLOW_SPELL = 1.10  # a final reading whose reference ran this much slower than the tables' is retaken
SIDE_POINTS = 8  # grid points of a side that is not one width group
CALIBRATION = 16  # sampled architectures the correction is fitted on (plus narrowest and widest)
# bytes of timed layers or networks held at once (weights and input, float32): entries beyond it
# are timed in further phases (:func:`time_bounded`)
PHASE_BYTES = 1 << 30
VERSION = 3  # 2: three-network reference; 3: a table per memory format, the faster one counts


@dataclass
class LayerTable:
    """Measured ms of one layer over a grid of (input side width, output side width)."""

    name: str
    kind: str  # conv | linear
    gin: list  # parts of the input side, as in the cost table: [[index, coef, fixed], ...]
    gout: list
    ain: list  # grid of input side widths (ascending)
    bout: list  # grid of output side widths
    ms: list  # ms[i][j] at (ain[i], bout[j])
    hw: int  # output positions (H·W; 1 for a linear layer) of one image
    exact_in: int = -1  # the group whose candidates *are* the input grid (-1: interpolate)
    exact_out: int = -1


@dataclass
class LatencyModel:
    """Tables plus the fitted correction; ``predict`` for integer widths, ``expected`` under
    probabilities (differentiable). Widths are those of the searchable groups, in order."""

    layers: list
    w_lut: float = 1.0
    w_act: float = 0.0
    w_0: float = 0.0
    device: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    reference_ms: float = 0.0  # the reference workload's ms while the tables were measured (:func:`reference`)
    version: int = VERSION
    memory_format: str = "channels_last"  # the layout these tables time (torch runtime; ONNX Runtime: its own)
    # the same space timed in the other memory format in the same phases (torch runtime): a network
    # is deployed in whichever layout runs it faster, so predictions take the smaller of the two
    other: "LatencyModel | None" = None

    def at_reference(self, measured_ms: float, phase_reference_ms: float) -> float:
        """A time measured in a phase whose reference ran at ``phase_reference_ms``, at the speed
        the machine had while the tables were built (the level predictions are for)."""
        return measured_ms * self.reference_ms / phase_reference_ms

    # -- integer widths --------------------------------------------------------------------------
    def features(self, widths: list) -> tuple[float, float]:
        lut = act = 0.0
        for l in self.layers:
            a, b = _side(widths, l.gin), _side(widths, l.gout)
            lut += _interp2(l.ain, l.bout, l.ms, a, b)
            act += b * l.hw
        return lut, act

    def predict_own(self, widths: list) -> float:
        """Predicted ms of the small network with these widths in this model's memory format."""
        lut, act = self.features(widths)
        return self.w_lut * lut + self.w_act * act + self.w_0

    def predict(self, widths: list) -> float:
        """Predicted ms of the small network with these widths, in its faster memory format."""
        own = self.predict_own(widths)
        return own if self.other is None else min(own, self.other.predict_own(widths))

    # -- expected under a distribution -----------------------------------------------------------
    def expected(self, probs: list, cands: list) -> torch.Tensor:
        """E[ms] when group i takes width ``cands[i][k]`` with probability ``probs[i][k]``:
        exact for layers whose sides are single groups (``p_inᵀ T p_out``, or the diagonal when
        both sides are one group), the table interpolated at the expected side widths otherwise.
        With two memory formats: the smaller of the two formats' expectations, which is exact on a
        one-hot distribution and never below E[min] (Jensen) on a spread one."""
        own = self.expected_own(probs, cands)
        return own if self.other is None else torch.minimum(own, self.other.expected_own(probs, cands))

    def expected_own(self, probs: list, cands: list) -> torch.Tensor:
        """:meth:`expected` in this model's memory format."""
        mean = [p @ c for p, c in zip(probs, cands)]
        dtype = probs[0].dtype if probs else torch.float64
        dev = probs[0].device if probs else None
        lut = torch.zeros((), dtype=dtype, device=dev)
        act = torch.zeros((), dtype=dtype, device=dev)
        cache = self.__dict__.setdefault("_tensors", {})  # every architecture step: build them once
        for k, l in enumerate(self.layers):
            t = cache.get((k, dtype, dev))
            if t is None:
                t = cache[(k, dtype, dev)] = torch.tensor(l.ms, dtype=dtype, device=dev)
            pi = probs[l.exact_in] if l.exact_in >= 0 else None
            po = probs[l.exact_out] if l.exact_out >= 0 else None
            if pi is not None and po is not None:
                lut = lut + (torch.diagonal(t) @ pi if l.exact_in == l.exact_out else pi @ t @ po)
            elif pi is not None:
                lut = lut + pi @ _interp_rows(l.bout, t.T, _side(mean, l.gout))
            elif po is not None:
                lut = lut + _interp_rows(l.ain, t, _side(mean, l.gin)) @ po
            else:
                col = _interp_rows(l.bout, t.T, _side(mean, l.gout))
                lut = lut + _interp1(l.ain, col, _side(mean, l.gin))
            act = act + _side(mean, l.gout) * l.hw
        return self.w_lut * lut + self.w_act * act + self.w_0

    # -- storage ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, inner: bool = False) -> "LatencyModel":
        """The model :meth:`to_dict` gave; a ValueError for a dict no DAN wrote. ``other`` nests once
        (the other memory format's tables hold none): an audit's cache entry nesting it thousands of
        times deep was a RecursionError."""
        d = dict(d)
        d["layers"] = [LayerTable(**l) for l in d["layers"]]
        if d.get("other") is not None:
            if inner:
                raise ValueError("a latency model's 'other' holds another 'other'")
            d["other"] = cls.from_dict(d["other"], inner=True)
        return cls(**d)


# -- building -------------------------------------------------------------------------------------
def device_description(threads: int, batch: int, runtime: str = "torch") -> dict:
    """What a table depends on besides the network: CPU model, runtime, threads, batch, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = {"cpu": cpu, "machine": platform.machine(), "runtime": runtime, "threads": int(threads),
           "batch": int(batch), "torch": torch.__version__, "python": platform.python_version()}
    if runtime == "onnxruntime":  # its kernels time the table: an upgrade's table is another one (an
        # audit found a table kept across ONNX Runtime versions; the exporter is PyTorch's, keyed above)
        with contextlib.suppress(ImportError):
            import onnxruntime

            dev["onnxruntime"] = onnxruntime.__version__
    return dev


def geometry(sn) -> list[dict]:
    """The conv / linear layers of the supernet's cost table with what rebuilding them needs:
    module hyper-parameters and the input size, recorded by a forward pass of the big network."""
    from dan.adjoint import extract_big
    from dan.graph import SAME_PADDING_CONVS
    from dan.layers import same_padding
    from dan.supernet import FIXED, TIED

    big = extract_big(sn.anet)
    shapes = {}
    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left alone
            shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in big.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        big(torch.zeros((1,) + tuple(sn.input_shape[1:])))
    for h in hooks:
        h.remove()
    modules = dict(big.named_modules())
    out = []
    for l in sn.table.layers:
        m = modules.get(l.name)
        if l.kind == FIXED or not isinstance(m, (nn.Conv2d, nn.Linear)) or l.name not in shapes:
            continue
        (xin, yout) = shapes[l.name]
        side_full = sum(c * f for _, c, f in l.gin) or 1
        g = {"name": l.name, "gin": [list(p) for p in l.gin], "gout": [list(p) for p in l.gout],
             "tied": l.kind == TIED, "in_full": m.in_features if isinstance(m, nn.Linear) else m.in_channels,
             "out_full": m.out_features if isinstance(m, nn.Linear) else m.out_channels}
        if isinstance(m, nn.Conv2d):
            in_hw = list(xin[2:])
            if type(m).__name__ in SAME_PADDING_CONVS or m.__dict__.get("same_pad"):
                # it pads inside its forward (after the hook saw its input): time the conv on the
                # padded input, so the rebuilt layer (padding 0) makes the output it makes
                in_hw = list(same_padding(torch.empty((1, 1, *in_hw)), m.kernel_size, m.stride, m.dilation).shape[2:])
            g.update(kind="conv", kernel=list(m.kernel_size), stride=list(m.stride), padding=list(m.padding)
                     if not isinstance(m.padding, str) else m.padding, dilation=list(m.dilation),
                     groups=m.groups, in_hw=in_hw, hw=int(math.prod(yout[2:])))
            if m.padding_mode != "zeros":  # only then: the cache keys of zero-padded spaces stay
                g["padding_mode"] = m.padding_mode
        else:
            g.update(kind="linear", hw=int(math.prod(yout[1:-1])) if len(yout) > 2 else 1,
                     rows=list(xin[1:-1]), mult=max(1, int(round(m.in_features / side_full))))
        out.append(g)
    return out


def _grid(sn, parts: list, full: int) -> tuple[list[int], int]:
    """Side widths to measure: the group's candidates when the side is one group (coefficient 1),
    else SIDE_POINTS widths over the side's range (an unscaled side: its one width)."""
    if len(parts) == 1 and parts[0][0] >= 0 and parts[0][1] == 1:
        return list(sn.cands[parts[0][0]]), parts[0][0]
    lo = _side([c[0] for c in sn.cands], parts)
    hi = _side([c[-1] for c in sn.cands], parts)
    lo, hi = max(1, int(round(lo))), max(1, int(round(hi)))
    if lo == hi:
        return [lo], -1
    pts = sorted({int(round(lo + (hi - lo) * k / (SIDE_POINTS - 1))) for k in range(SIDE_POINTS)})
    return pts, -1


def _layer_fn(g: dict, a: int, b: int, batch: int, runtime: str = "torch", threads: int | None = None,
              memory_format: str = "channels_last"):
    """A closure running the layer of geometry ``g`` at input width ``a``, output width ``b``."""
    if g["kind"] == "linear":
        m = nn.Linear(g["in_full"] if g["tied"] else int(a) * g["mult"], b)
        shape = (batch,) + tuple(g["rows"]) + (m.in_features,)
    else:
        if g["tied"]:  # grouped conv tied to its output group: the per-group input width stays
            per_out = g["out_full"] // g["groups"]
            groups = max(1, b // per_out)
            cin = groups * (g["in_full"] // g["groups"])
        else:
            groups, cin = 1, int(a)
        m = nn.Conv2d(cin, b, tuple(g["kernel"]), tuple(g["stride"]), g["padding"] if isinstance(g["padding"], str)
                      else tuple(g["padding"]), tuple(g["dilation"]), groups=groups, bias=True,
                      padding_mode=g.get("padding_mode", "zeros"))
        shape = (batch, cin) + tuple(g["in_hw"])
    return runnable(m.eval().requires_grad_(False), shape, runtime, threads, memory_format)


def runnable(net: nn.Module, shape: tuple, runtime: str = "torch", threads: int | None = None,
             memory_format: str = "channels_last"):
    """A zero-argument closure running ``net`` once on a fixed input of ``shape`` in ``runtime``:
    ``torch`` (eager; for 4-d inputs, weights and input in ``memory_format``: ``channels_last`` as
    :func:`dan.deploy.deploy_form`, or ``contiguous``) or ``onnxruntime`` (exported to a temporary
    ONNX file, ``threads`` intra-op threads)."""
    x = torch.randn(tuple(shape))
    if runtime == "onnxruntime":
        import tempfile

        from dan import onnx_export

        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "net.onnx")
        onnx_export.export(net.to(memory_format=torch.contiguous_format) if x.ndim == 4 else net, path, tuple(shape))
        sess = onnx_export.session(path, threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}

        def run_ort(keep=tmp):  # keep: the folder lives as long as the closure
            sess.run(None, feed)
        return run_ort
    if x.ndim == 4:
        from dan.deploy import MEMORY_FORMATS

        fmt = MEMORY_FORMATS[memory_format]
        net = copy.deepcopy(net).to(memory_format=fmt)  # Module.to is in place: the caller's net stays
        x = x.contiguous(memory_format=fmt)

    def run():
        with torch.no_grad():
            net(x)
    return run


def time_calls(fns: list, *, rounds: int = 15, inner: int = 3, warmup: int = 2, progress: str | None = None,
               seed: int = 0, reference=None, chunk: int = 40, bar=None) -> tuple[list[float], float | None]:
    """Median ms per call of each function, and of ``reference``.

    ``rounds`` rounds, each visiting the functions in a new random order and calling each ``inner``
    times back to back (after ``warmup`` calls). With a ``reference`` (a fixed workload), it is
    timed before every ``chunk`` entries, and each entry's time is scaled by the phase's median
    reference time over the latest reference time: a slow spell of the shared machine slows both
    and cancels out. The second value returned is that median reference time (None without one),
    the level the whole phase ran at. ``bar``: a progress bar of the caller's to advance (one per
    call timed), instead of one of ``progress``'s own.
    """
    rng = random.Random(seed)
    for f in fns + ([reference] if reference else []):
        for _ in range(warmup):
            f()

    def timed(f):
        t = time.perf_counter()
        for _ in range(inner):
            f()
        return (time.perf_counter() - t) / inner

    samples = [[] for _ in fns]  # (time, reference time just before)
    refs = []
    own = bar is None
    bar = _bar(rounds * len(fns), progress) if own else bar
    for _ in range(rounds):
        order = list(range(len(fns)))
        rng.shuffle(order)
        for k, i in enumerate(order):
            if reference is not None and k % chunk == 0:
                refs.append(timed(reference))
            samples[i].append((timed(fns[i]), refs[-1] if refs else None))
            if bar is not None:
                bar.update(1)
    if bar is not None and own:
        bar.close()
    if reference is None:
        return [1000.0 * statistics.median(t for t, _ in s) for s in samples], None
    level = statistics.median(refs)
    return [1000.0 * statistics.median(t * level / r for t, r in s) for s in samples], 1000.0 * level


def measure_tables(sn, batch: int = 1, *, rounds: int = 15, inner: int = 3, progress: bool = True,
                   runtime: str = "torch", threads: int | None = None,
                   formats: tuple | None = None, keep: str | None = None) -> tuple[dict, float]:
    """Time every table layer at every pair of its grid widths (see the module docstring), in each
    memory format of ``formats`` (default: the runtime's :data:`FORMATS`), interleaved in phases
    of bounded memory (:func:`time_bounded`); returns ``{format: [LayerTable]}`` and the reference
    level of the measurement (:func:`reference`). A linear layer's input is not an image, so the
    memory format does not change it: it is built and timed once for all formats."""
    formats = formats or FORMATS[runtime]
    makers, sizes, where, tables = [], [], [], {f: [] for f in formats}
    for g in geometry(sn):
        ain, ei = _grid(sn, g["gin"], g["in_full"]) if not g["tied"] else ([1], -1)
        bout, eo = _grid(sn, g["gout"], g["out_full"])
        for fmt in formats:
            tables[fmt].append(LayerTable(g["name"], g["kind"], g["gin"], g["gout"], ain, bout,
                                          [[0.0] * len(bout) for _ in ain], g["hw"], ei, eo))
        t = len(tables[formats[0]]) - 1
        shared = g["kind"] == "linear"  # one entry fills every format's cell
        for i, a in enumerate(ain):
            for j, b in enumerate(bout):
                for fmt in formats[:1] if shared else formats:
                    makers.append(lambda g=g, a=a, b=b, fmt=fmt: _layer_fn(g, a, b, batch, runtime, threads, fmt))
                    sizes.append(_layer_bytes(g, a, b, batch))
                    where.append([(f, t, i, j) for f in (formats if shared else (fmt,))])
    ms, level = time_bounded(makers, sizes, rounds=rounds, inner=inner,
                             reference=reference(sn, batch, runtime, threads),
                             progress="latency tables" if progress else None, keep=keep)
    for cells, v in zip(where, ms):
        for fmt, t, i, j in cells:
            tables[fmt][t].ms[i][j] = v
    return tables, level


def _layer_bytes(g: dict, a: int, b: int, batch: int) -> int:
    """Bytes of the weights and the input of the layer :func:`_layer_fn` builds (float32)."""
    if g["kind"] == "linear":
        cin = g["in_full"] if g["tied"] else int(a) * g["mult"]
        return 4 * (cin * (b + 1) + batch * math.prod(g["rows"]) * cin)
    if g["tied"]:  # as _layer_fn: groups follow the output width, each reads per_in channels
        per_in = g["in_full"] // g["groups"]
        cin = max(1, b // (g["out_full"] // g["groups"])) * per_in
    else:
        cin = per_in = int(a)
    return 4 * (b * (per_in * math.prod(g["kernel"]) + 1) + batch * cin * math.prod(g["in_hw"]))


def time_bounded(makers: list, sizes: list, *, budget: int | None = None, reference=None,
                 progress: str | None = None, keep: str | None = None, **kw) -> tuple[list[float], float | None]:
    """:func:`time_calls` on the closures ``maker()`` builds, holding at most ``budget`` bytes of
    them (by ``sizes``) at once: the makers, in order, are split into phases that each fit (one too
    large for the budget is a phase of its own), each phase's closures built, timed and freed
    before the next. Every entry is scaled to the median of the phases' reference levels, so a
    slow phase does not bias its entries. Small spaces are one phase, as one interleaved
    :func:`time_calls`.

    Holding every entry at once does not fit everywhere: VGG-11 at 64 pixels has 64 entries of its
    first classifier layer (up to 25088 x 4096) and its PyTorch table took 22.9 GB of memory to
    build; a phase at a time bounds what the entries hold near ``budget`` (default
    :data:`PHASE_BYTES`): 5.7 GB in all, the supernet's 2.1 GB included (docs/latency.md).

    One progress bar counts every phase's calls (a bar per phase left a ResNet-50's user without
    the whole's time). With ``keep`` (a path without its ending), each finished phase is written to
    ``<keep>.<n>of<phases>.json`` and read back instead of timed again: an interrupted build of a
    ResNet-50 table at 224 pixels (15 minutes here) lost every phase."""
    import gc

    budget = PHASE_BYTES if budget is None else budget
    phases, used = [[]], 0
    for k, size in enumerate(sizes):
        if phases[-1] and used + size > budget:
            phases.append([])
            used = 0
        phases[-1].append(k)
        used += size
    results = []
    rounds = kw.get("rounds", 15)  # (time_calls' default)
    bar = _bar(rounds * len(makers), progress)
    try:
        for n, phase in enumerate(phases):  # one phase: one time_calls, its level the common one
            part = f"{keep}.{n + 1}of{len(phases)}.json" if keep else None
            how = {"rounds": rounds, "inner": kw.get("inner", 3)}  # a phase timed otherwise is timed again
            done = _kept_phase(part, len(phase), how)
            if done is None:
                fns = [makers[k]() for k in phase]
                with OtherLoad() as load:  # (the build set the threads it is measured with)
                    done = time_calls(fns, reference=reference, bar=bar, **kw)
                del fns
                gc.collect()
                if part:
                    record = {"version": VERSION, "entries": len(phase), **how, "load": load.to_dict()}
                    atomic_write(lambda p, d=done: write_json({**record, "ms": d[0], "level": d[1]}, p, indent=None),
                                 part)
            elif bar is not None:
                bar.update(rounds * len(phase))
            results.append(done)
    finally:
        if bar is not None:
            bar.close()
    levels = [lv for _, lv in results if lv is not None]
    common = statistics.median(levels) if levels else None
    return [t * (common / lv if common else 1.0) for ms, lv in results for t in ms], common


def _kept_phase(part: str | None, entries: int, how: dict) -> tuple[list[float], float | None] | None:
    """A phase :func:`time_bounded` wrote before (its times and level), timed as ``how`` says (its
    rounds and calls per round), or None."""
    if not part or not os.path.isfile(part):
        return None
    try:
        with open(part) as f:
            d = json.load(f)
        if d["version"] == VERSION and d["entries"] == entries == len(d["ms"]) and \
                all(d.get(k) == v for k, v in how.items()):
            return [float(v) for v in d["ms"]], (None if d["level"] is None else float(d["level"]))
    except (OSError, ValueError, TypeError, KeyError):
        pass  # damaged: timed again
    return None


def reference(sn, batch: int = 1, runtime: str = "torch", threads: int | None = None):
    """The fixed workload every phase is scaled by: the narrowest, a middle and the widest small
    network, one forward each. A slow spell does not slow thin (overhead-bound) and wide
    (compute-bound) networks alike; the widest alone once left a 9 % bias between phases."""
    shape = (batch,) + tuple(sn.input_shape[1:])
    runs = [runnable(small_network(sn, [k(len(c)) for c in sn.cands]), shape, runtime, threads)
            for k in (lambda n: 0, lambda n: n // 2, lambda n: n - 1)]

    def run():
        for r in runs:
            r()
    return run


def small_network(sn, choice: list[int]) -> nn.Module:
    """The deploy form of the small network with candidate ``choice`` per group."""
    from dan.adjoint import extract_small
    from dan.deploy import deploy_form, layout_for

    sn.set_widths(choice)
    net = extract_small(sn.anet)
    if sn.deploy_layout is None:  # the same for every width: probed once, not per network
        sn.deploy_layout = layout_for(net, sn.input_shape)
    return deploy_form(net, sn.deploy_layout)


def measure_networks(sn, choices: list, batch: int = 1, *, rounds: int = 15, inner: int = 3,
                     progress: str | None = None, runtime: str = "torch", threads: int | None = None
                     ) -> tuple[list[float], float]:
    """Measured ms of whole small networks (deploy form), each in its fastest memory format of the
    runtime's :data:`FORMATS`, interleaved as :func:`time_calls` with the :func:`reference`; also
    returns the phase's reference level."""
    per, level = measure_formats(sn, choices, batch, rounds=rounds, inner=inner, progress=progress,
                                 runtime=runtime, threads=threads)
    return fastest(per)[0], level


def fastest(per: dict) -> tuple[list[float], list[str]]:
    """Per network of a :func:`measure_formats` result: its time in its fastest format, and that format."""
    names = list(per)
    best = [min(range(len(names)), key=lambda i: ms[i]) for ms in zip(*per.values())]
    return [per[names[i]][k] for k, i in enumerate(best)], [names[i] for i in best]


def measure_formats(sn, choices: list, batch: int = 1, *, rounds: int = 15, inner: int = 3,
                    progress: str | None = None, runtime: str = "torch", threads: int | None = None,
                    formats: tuple | None = None, keep: str | None = None) -> tuple[dict, float]:
    """``{format: [ms per choice]}`` for each memory format (default the runtime's :data:`FORMATS`),
    every network in every format timed interleaved, in phases of bounded memory
    (:func:`time_bounded`); and the reference level they are scaled to."""
    formats = formats or FORMATS[runtime]
    shape = (batch,) + tuple(sn.input_shape[1:])
    last = {}  # the network of the latest choice: its formats' makers run one after another

    def make(c, fmt):
        if last.get("choice") != c:
            last.update(choice=c, net=small_network(sn, c))
        return runnable(last["net"], shape, runtime, threads, fmt)  # runnable copies before converting

    makers, sizes = [], []
    for c in choices:
        for fmt in formats:
            makers.append(lambda c=c, fmt=fmt: make(c, fmt))
            sizes.append(4 * (sn.cost_of(c)[1] + math.prod(shape)))
    ms, level = time_bounded(makers, sizes, rounds=rounds, inner=inner, progress=progress,
                             reference=reference(sn, batch, runtime, threads), keep=keep)
    k = len(formats)
    return {fmt: ms[i::k] for i, fmt in enumerate(formats)}, level


def sample_choices(sn, n: int, seed: int) -> list[list[int]]:
    """``n`` architectures with every group's candidate drawn uniformly."""
    rng = random.Random(seed)
    return [[rng.randrange(len(c)) for c in sn.cands] for _ in range(n)]


def build(sn, *, batch: int = 1, threads: int | None = None, runtime: str = "torch", cache: bool = True,
          progress: bool = True, rounds: int = 15, remeasure_busy: bool = False, say=None) -> LatencyModel:
    """The latency model of the supernet's space on this device (from the cache when it holds one
    for the same device, runtime, threads, batch, PyTorch and network). ``remeasure_busy``: a
    cached table measured while other processes took the CPUs is measured again when the machine
    is quiet now (a search does so; a busy table otherwise stays, named by :func:`table_note`).
    ``say``: where a line announcing a measurement goes (a ResNet-50 at 224 pixels measured for 15
    minutes with only its phases' bars). The finished phases of an interrupted measurement are kept
    in the cache and taken up by the next build of the same table."""
    path, model = cached(sn, batch=batch, threads=threads, runtime=runtime)
    threads = int(threads or torch.get_num_threads())
    dev = device_description(threads, batch, runtime)
    if cache and model is not None and not (remeasure_busy and _busy_then_quiet_now(model, threads)):
        return model
    key = os.path.basename(path)[: -len(".json")]
    keep = os.path.join(cache_dir(), key) if cache else None
    if say is not None:
        say(f"measuring this CPU's latency model of the network ({measurement(sn, threads, batch, runtime)})"
            + (f": kept in {cache_dir()} for later searches of it" if cache else ""))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if keep:
            os.makedirs(cache_dir(), exist_ok=True)
        with OtherLoad(threads) as load:
            model = _measure_model(sn, dev, batch, threads, runtime, rounds, progress, keep)
        model.fit["timing_load"] = _with_kept_phases(load.to_dict(), key) if keep else load.to_dict()
    except KeyboardInterrupt:
        kept, again = _kept_phases(key) if keep else 0, spelt("command", "call")
        if not kept:  # (a small network's table is one phase: an audit was told of phases that were not kept)
            raise KeyboardInterrupt(f"interrupted while this CPU's latency model was measured, before any of it "
                                    f"could be kept: run the same {again} again to measure it") from None
        raise KeyboardInterrupt(f"interrupted while this CPU's latency model was measured: its {kept} finished "
                                f"phase(s) are kept in {cache_dir()}; run the same {again} again to go on from "
                                f"them") from None
    finally:
        torch.set_num_threads(before)
    if cache:
        atomic_write(lambda p: write_json(model.to_dict(), p, indent=None), path)
        for name in os.listdir(cache_dir()):  # its phases: the whole is kept now
            if name.startswith(f"{key}.") and name != f"{key}.json":
                with contextlib.suppress(FileNotFoundError):  # (another process building it removed it)
                    os.remove(os.path.join(cache_dir(), name))
    return model


def _kept_phases(key: str) -> int:
    """How many finished phases of the table ``key`` the cache keeps (:func:`time_bounded`)."""
    with contextlib.suppress(OSError):
        return sum(1 for n in os.listdir(cache_dir()) if n.startswith(f"{key}.") and n != f"{key}.json")
    return 0


def _with_kept_phases(load: dict, key: str) -> dict:
    """The busy-machine reading of a table (``load``: this build's), with its phases' as they were
    kept: a phase an interrupted build timed while other processes took the CPUs makes the table
    busy too, as if it had been timed in this build (a review found a table built partly on a busy
    machine read as quiet: only the last build's reading was kept)."""
    phases = []
    for name in sorted(os.listdir(cache_dir())):
        if name.startswith(f"{key}.") and name != f"{key}.json":
            with contextlib.suppress(OSError, ValueError, AttributeError):
                with open(os.path.join(cache_dir(), name)) as f:
                    phases.append(json.load(f).get("load") or {})
    busy = [p for p in phases if p.get("busy")]
    if not busy or load.get("busy"):
        return load
    return {**load, "busy": True, "other_processes_cores": max(p.get("other_processes_cores") or 0.0 for p in busy)}


def measurement(sn, threads: int, batch: int, runtime: str) -> str:
    """What :func:`build` measures when the cache holds no table: the line that announces it, and
    a search's dry run, which says it would."""
    return (f"{len(geometry(sn))} layers at every pair of candidate widths, then {CALIBRATION + 2} whole networks; "
            f"{threads} thread(s), batch {batch}, {runtime}")


def cached(sn, *, batch: int = 1, threads: int | None = None, runtime: str = "torch"):
    """``(path, model)``: the cache file of the supernet ``sn``'s latency model on this device
    (:func:`build`'s key) and the model it holds, or None when it holds none of this version (a
    damaged entry is rebuilt). Measures nothing: :func:`build` takes the model from here, and a
    search's dry run (:mod:`dan.dry_run`) says whether a table would be measured. The runtime is
    checked first (ONNX Runtime installed)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"latency runtime '{runtime}': choose one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        from dan import onnx_export
        from dan.errors import UserError

        if not onnx_export.available():
            raise UserError(f"a latency model for ONNX Runtime needs onnx and onnxruntime: {onnx_export.INSTALL_HINT}")
    threads = int(threads or torch.get_num_threads())
    path = os.path.join(cache_dir(), f"{_key(device_description(threads, batch, runtime), sn)}.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                model = LatencyModel.from_dict(json.load(f))
            if model.version == VERSION:
                return path, model
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            pass  # a damaged cache entry is rebuilt (RecursionError: JSON nested too deeply to parse)
    return path, None


def _busy_then_quiet_now(model: LatencyModel, threads: int, seconds: float = 0.5) -> bool:
    """Whether ``model`` was measured on a busy machine and this one is quiet for ``seconds``."""
    if not (model.fit.get("timing_load") or {}).get("busy"):
        return False
    with OtherLoad(threads) as now:
        time.sleep(seconds)
    return now.busy is False


# a table fitted worse than this (median relative error over its calibration networks) is named
POOR_FIT = 0.05


def table_note(model: LatencyModel) -> str | None:
    """Why a latency table's times are not to be trusted, or None: measured while other processes
    took the CPUs (its ``fit["timing_load"]``), or fitted poorly. An audit's table, built while
    other jobs used 1.7 of 2 CPUs, timed the reference 2.5 times slower than a quiet machine did
    and fitted with a median error of 16 % (1.4 % quiet); it was cached, and a later absolute budget
    was read on its slow scale without a word. The search records it in arch.json
    (``latency.table_note``) and prints it after its result (not before a user error's one line)."""
    load = model.fit.get("timing_load") or {}
    err = model.fit.get("median_abs_rel_error")
    why = []
    if load.get("busy"):
        why.append(f"other processes used {load['other_processes_cores']:.1f} of the {load['cpus']} CPUs while it "
                   f"was measured")
    if isinstance(err, (int, float)) and err > POOR_FIT:
        why.append(f"its fit is poor (median error {100 * err:.0f} % on its calibration networks)")
    if not why:
        return None
    if load.get("busy"):
        fix = f"delete it from {cache_dir()} and search again on a quiet machine"
    else:  # measured on a quiet machine: measuring again gives the same fit (an audit was sent to do so)
        fix = ("the latency model does not fit this network well on this runtime: check the found network with "
               "tools/latency.py --arch, or search under a FLOPs budget")
    return f"the latency table's times are unreliable ({'; '.join(why)}): {fix}"


def _measure_model(sn, dev: dict, batch: int, threads: int, runtime: str, rounds: int, progress: bool,
                   keep: str | None = None):
    """Measure the tables and fit the whole-network correction (see :func:`build`); ``keep``: where
    finished phases are kept (:func:`time_bounded`)."""
    tables, level = measure_tables(sn, batch, rounds=rounds, progress=progress, runtime=runtime, threads=threads,
                                   keep=keep and f"{keep}.tables")
    calib = sample_choices(sn, CALIBRATION, seed=12345)
    calib += sn.extreme_choices()
    per, now = measure_formats(sn, calib, batch, progress="latency calibration" if progress else None,
                               runtime=runtime, threads=threads, keep=keep and f"{keep}.calibration")
    models = []
    for fmt, layers in tables.items():  # one table and one correction per memory format
        m = LatencyModel(layers, device=dev, reference_ms=level, memory_format=fmt)
        measured = [t * level / now for t in per[fmt]]  # at the tables' machine speed
        m.w_lut, m.w_act, m.w_0 = _fit([m.features(sn.widths_of(c)) for c in calib], measured)
        models.append(m)
    model = models[0]
    if len(models) > 1:
        model.other = models[1]
    measured = [min(ms) * level / now for ms in zip(*per.values())]
    resid = [abs(model.predict(sn.widths_of(c)) - m) / m for c, m in zip(calib, measured)]
    model.fit = {"architectures": len(calib), "median_abs_rel_error": statistics.median(resid),
                 "max_abs_rel_error": max(resid),
                 # the narrowest and the widest network as measured (the table's scale): the floor a
                 # budget is checked against when the fit predicts below it (:func:`measured_floor`)
                 "extremes_ms": measured[-2:],
                 # how many calibration networks ran faster in each format
                 "fastest_format": {f: sum(1 for ms in zip(*per.values()) if ms[i] == min(ms))
                                    for i, f in enumerate(per)}}
    return model


def cache_dir() -> str:
    root = os.environ.get("DAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dan")
    return os.path.join(root, "latency")


# -- checking -------------------------------------------------------------------------------------
def evaluate(sn, model: LatencyModel, n: int = 50, *, seed: int = 0, rounds: int = 15,
             progress: bool = True) -> dict:
    """Predicted against measured ms on ``n`` architectures drawn uniformly from the space (not
    those the correction was fitted on), with FLOPs as a predictor of the same latencies."""
    threads = model.device.get("threads") or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        choices = sample_choices(sn, n, seed)
        raw, level = measure_networks(sn, choices, model.device.get("batch", 1), rounds=rounds,
                                      runtime=model.device.get("runtime", "torch"), threads=int(threads),
                                      progress="latency check" if progress else None)
    finally:
        torch.set_num_threads(before)
    measured = [model.at_reference(m, level) for m in raw]
    predicted = [model.predict(sn.widths_of(c)) for c in choices]
    flops = [sn.cost_of(c)[0] for c in choices]
    err = sorted(abs(p - m) / m for p, m in zip(predicted, measured))
    raw_err = sorted(abs(p - m) / m for p, m in zip(predicted, raw))
    return {"architectures": n, "seed": seed, "spearman": spearman(predicted, measured),
            "spearman_flops": spearman(flops, measured),
            "median_abs_rel_error": statistics.median(err), "p90_abs_rel_error": _quantile(err, 0.9),
            "median_abs_rel_error_raw": statistics.median(raw_err), "machine_speed": model.reference_ms / level,
            "rows": [{"widths": sn.widths_of(c), "flops": f, "measured_ms": m, "raw_ms": r, "predicted_ms": p}
                     for c, f, m, r, p in zip(choices, flops, measured, raw, predicted)]}


def measure_found(sn, model: LatencyModel, choice: list[int], relative: bool, repeats: int = 1) -> dict:
    """The latency of the small network ``choice`` as a search checks it: timed in one interleaved
    phase with the widest small network (each in its faster memory format), ``repeats`` independent
    phases, the median one kept. Under a ``relative`` budget it is the found network's share of the
    widest's time measured alongside, read on the table's scale; else its time at the tables'
    machine speed (:meth:`LatencyModel.at_reference`).

    One phase is one reading of a shared machine: readings of one network in one process spread by
    about +-2 %, and a search that stops repairing at the first reading inside its band keeps a
    lucky one; the median of three is what fresh processes then agree with. A slow spell slows thin
    (overhead-bound) networks more than wide ones, so it biases even the ratio of two networks
    timed together: a reading whose reference workload ran more than :data:`SLOW_SPELL` times
    slower than while the tables were measured is retaken (at most ``repeats`` times)."""
    dev = model.device
    widest = sn.extreme_choices()[1]
    widest_ms = model.predict(sn.widths_of(widest))  # the table's scale a relative reading is read on
    before = torch.get_num_threads()
    torch.set_num_threads(int(dev["threads"]))
    runs, retaken = [], 0
    try:
        while len(runs) < repeats:
            per, level = measure_formats(sn, [choice, widest], dev["batch"], runtime=dev["runtime"],
                                         threads=int(dev["threads"]), **FINAL)
            if level > SLOW_SPELL * model.reference_ms and retaken < repeats:
                retaken += 1
                continue
            (found, top), fmts = fastest(per)
            ms = found / top * widest_ms if relative else model.at_reference(found, level)
            runs.append({"measured_ms": ms, "measured_raw_ms": found, "measured_widest_ms": top,
                         "machine_speed": model.reference_ms / level,
                         # the layout the found network ran fastest in (eager PyTorch: deploy it so;
                         # ONNX Runtime chooses its own, None)
                         "memory_format": fmts[0] if dev["runtime"] == "torch" else None})
    finally:
        torch.set_num_threads(before)
    runs.sort(key=lambda r: r["measured_ms"])
    return dict(runs[len(runs) // 2], readings_ms=[r["measured_ms"] for r in runs], slow_readings_retaken=retaken)


def arch_supernet(arch, model=None):
    """The search space an ``arch.json`` was found in (on a copy of ``model``, the network object
    it was searched on, when given), built from what it records of its data (input shape, class
    count) rather than from the data itself: a network is timed on a machine that need not hold the
    dataset, nor import a dataset function (``dan.data.code``) it names."""
    from dan.config import Config
    from dan.data import DatasetInfo
    from dan.supernet import build_supernet

    cfg = Config.from_dict(arch.config)
    _, c, size, _ = arch.input_shape
    return build_supernet(cfg, DatasetInfo(cfg.data.dataset, arch.num_classes, c, size, (0.0,) * c, (1.0,) * c),
                          model=model)


def remeasure(arch, repeats: int = 1, *, model=None) -> dict:
    """Measure again the network of an ``arch.json`` found under a latency budget, on this machine
    in this process, as the search did (:func:`measure_found`; a relative budget is re-read
    against this machine's widest network, as a search here would):
    ``{"measured_ms", "measured_over_budget", "in_band", "same_device", ...}``. ``arch``: the
    :class:`~dan.arch.Arch` or its ``arch.json``'s path (or the search's folder), as
    :func:`dan.build_adjoint` takes it (a path was an AttributeError). ``model``: the network object
    a search was given as a Python object (``dan.search(model, ...)``), which the arch.json cannot
    rebuild (as for :func:`dan.build_adjoint`)."""
    import torch.nn as nn

    from dan.arch import as_arch
    from dan.errors import UserError
    from dan.models import kind

    arch = as_arch(arch, "remeasure")
    if "latency" not in arch.budget or not arch.latency:  # (first: an object's FLOPs search has nothing to time)
        raise UserError("this arch.json was not searched under a latency budget: --arch re-times the network of a "
                        "search.py --budget-latency run (its FLOPs or params budget needs no timing)")
    if model is not None and not isinstance(model, nn.Module):
        raise UserError(f"remeasure's model is the network object the architecture was searched on, got a "
                        f"{type(model).__name__}: pass the nn.Module")
    if model is None and kind(arch.space) == "object":  # the tool cannot rebuild it: say how to time it
        raise UserError(f"this network was searched as a Python object ({arch.space[8:-1]}): time it from Python "
                        f"with dan.latency.remeasure(dan.load_arch(path), model=your_model) (import dan.latency)")
    dev = arch.latency.get("device")
    batch, threads, runtime, note = recorded_device(dev)  # before anything is built
    sn = arch_supernet(arch, model)
    try:
        choice = [c.index(arch.widths[g.name]) for g, c in zip(sn.groups, sn.cands)]
    except (KeyError, ValueError):
        raise UserError("the arch.json's widths are not candidates of its own search space: was it edited?")
    model = build(sn, batch=batch, threads=threads, runtime=runtime, progress=False)
    b = arch.budget
    r = measure_found(sn, model, choice, bool(b.get("relative")), repeats)
    budget = b["relative"] * model.predict(sn.widths_of(sn.extreme_choices()[1])) if b.get("relative") else b["latency"]
    ratio = r["measured_ms"] / budget
    return dict(r, budget_ms=budget, repeats=[ms / budget for ms in r["readings_ms"]], measured_over_budget=ratio,
                in_band=bool(abs(ratio - 1) <= b.get("band", 0.03)),
                same_device=note is None and _same_device(dev), note=note)


MAX_BATCH = 65536  # a recorded latency batch above it is refused (as train.latency_batches)


def recorded_device(dev) -> tuple[int, int, str, str | None]:
    """The batch, threads and runtime an arch.json's ``latency.device`` records, checked before they
    are used (:func:`remeasure`), and a note or None: an audit's arch.json with batch 50,000,000 asked
    146 GB. The batch is an integer in [1, 65536], the runtime one of :data:`RUNTIMES`; threads above
    the CPUs this process may use are taken down to them, with a note (as ``data.workers``: a table of
    more threads than cores only contends), since a search on a larger machine recorded its own."""
    from dan.errors import UserError

    def bad(key, what, value):
        raise UserError(f"the arch.json's latency.{key} must be {what}, got {value!r:.80}: fix the file or "
                        f"search again")

    if not isinstance(dev, dict):
        bad("device", "an object with batch, threads and runtime", dev)
    batch, threads, runtime = dev.get("batch"), dev.get("threads"), dev.get("runtime")
    if not (isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= MAX_BATCH):
        bad("device.batch", f"an integer in [1, {MAX_BATCH}]", batch)
    if not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        bad("device.threads", "a positive integer", threads)
    if runtime not in RUNTIMES:
        bad("device.runtime", f"one of {', '.join(RUNTIMES)}", runtime)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads <= cpus:
        return batch, threads, runtime, None
    return batch, cpus, runtime, (f"note: the search timed with {threads} threads, more than the {cpus} CPUs this "
                                  f"process may use: timed with {cpus}")


def _same_device(recorded: dict) -> bool:
    """Whether this machine is the one ``recorded`` (an arch.json's latency device) describes, by what
    it records: an older DAN's record has no ONNX Runtime version, and a review's search of it was
    called "another machine" once the version joined the description."""
    now = device_description(recorded["threads"], recorded["batch"], recorded["runtime"])
    return all(now.get(k) == v for k, v in recorded.items())


def measure_archs(archs: list, *, batch: int = 1, threads: int = 1, runtime: str = "torch") -> list[float]:
    """Measured ms of the small networks of several ``arch.json`` of one search space, timed
    together (interleaved, with the reference) and scaled to the speed of this device's tables."""
    sn = arch_supernet(archs[0])
    choices = []
    for a in archs:
        try:
            choices.append([c.index(a.widths[g.name]) for g, c in zip(sn.groups, sn.cands)])
        except (KeyError, ValueError):
            from dan.errors import UserError

            raise UserError("the arch.json files are not of one search space (widths that are not its candidates)")
    model = build(sn, batch=batch, threads=threads, runtime=runtime, progress=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        measured, level = measure_networks(sn, choices, batch, runtime=runtime, threads=threads)
    finally:
        torch.set_num_threads(before)
    return [model.at_reference(m, level) for m in measured]


def spearman(a: list, b: list) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else float("nan")


# -- helpers --------------------------------------------------------------------------------------
def _locate(grid: list, v: float) -> tuple[int, int, float]:
    """Indices (i, i+1) around v in an ascending grid and the weight of i+1 (clamped ends)."""
    if len(grid) == 1 or v <= grid[0]:
        return 0, 0, 0.0
    if v >= grid[-1]:
        return len(grid) - 1, len(grid) - 1, 0.0
    hi = next(k for k, g in enumerate(grid) if g >= v)
    lo = hi - 1
    return lo, hi, (v - grid[lo]) / (grid[hi] - grid[lo])


def _interp2(ain, bout, ms, a, b) -> float:
    i0, i1, u = _locate(ain, a)
    j0, j1, v = _locate(bout, b)
    top = ms[i0][j0] * (1 - v) + ms[i0][j1] * v
    bot = ms[i1][j0] * (1 - v) + ms[i1][j1] * v
    return top * (1 - u) + bot * u


def _interp_rows(grid, t: torch.Tensor, v) -> torch.Tensor:
    """Row of ``t`` interpolated at ``v`` along its first axis (``grid``); differentiable in v."""
    if len(grid) == 1:
        return t[0]
    g = torch.tensor(grid, dtype=t.dtype, device=t.device)
    v = torch.as_tensor(v, dtype=t.dtype, device=t.device).clamp(g[0], g[-1])
    hi = int(torch.searchsorted(g, v.detach()).clamp(1, len(grid) - 1))
    w = (v - g[hi - 1]) / (g[hi] - g[hi - 1])
    return t[hi - 1] * (1 - w) + t[hi] * w


def _interp1(grid, col: torch.Tensor, v) -> torch.Tensor:
    return _interp_rows(grid, col[:, None], v)[0]


def _fit(features: list, measured: list) -> tuple[float, float, float]:
    """Least squares ``ms ≈ w_lut·lut + w_act·act + w_0``; falls back to ``w_lut·lut + w_0`` when
    the activation term would come out negative (it is a cost, never a saving)."""
    x = torch.tensor([[f[0], f[1], 1.0] for f in features], dtype=torch.float64)
    y = torch.tensor(measured, dtype=torch.float64)[:, None]
    w = torch.linalg.lstsq(x, y).solution[:, 0].tolist()
    if w[1] < 0 or w[0] <= 0:
        w2 = torch.linalg.lstsq(x[:, [0, 2]], y).solution[:, 0].tolist()
        w = [w2[0], 0.0, w2[1]]
    if w[0] <= 0:  # tables that barely vary (a tiny network, all overhead): trust them, fit the offset
        w = [1.0, 0.0, float((y[:, 0] - x[:, 0]).mean())]
    return float(w[0]), float(w[1]), float(w[2])


def _ranks(v: list) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _quantile(sorted_values: list, q: float) -> float:
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _key(dev: dict, sn) -> str:
    sig = {"device": dev, "version": VERSION, "input": list(sn.input_shape), "cands": sn.cands,
           "layers": geometry(sn)}
    return hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]


def _bar(total: int, desc: str | None):
    if desc is None:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, mininterval=1.0)


# -- the report -----------------------------------------------------------------------------------
def summary(model: LatencyModel) -> dict:
    """What the page says of a model: size of the tables and the fitted correction (per memory
    format when there are two)."""
    out = {"entries": sum(len(l.ain) * len(l.bout) for l in model.layers), "layers": len(model.layers),
           "w_lut": model.w_lut, "w_act": model.w_act, "w_0": model.w_0, "fit": model.fit, "device": model.device,
           "memory_format": model.memory_format}
    if model.other is not None:
        o = model.other
        out["other"] = {"memory_format": o.memory_format, "w_lut": o.w_lut, "w_act": o.w_act, "w_0": o.w_0}
    return out


def _format_text(m: dict) -> str:
    """The page's words for the memory formats of a model summary."""
    if "other" not in m:
        return "channels-last" if m.get("memory_format", "channels_last") == "channels_last" else "NCHW"
    o = m["other"]
    counts = m["fit"].get("fastest_format", {})
    name = {"channels_last": "channels-last", "contiguous": "NCHW"}
    said = ", ".join(f"{n} {name.get(f, f)}" for f, n in counts.items())
    return (f"each network in the faster of {name.get(m['memory_format'])} and "
            f"{name.get(o['memory_format'])}: one table and correction each, the entries and correction "
            f"below are the first's; the second's correction is "
            f"`ms = {o['w_lut']:.3f}·Σtable + {o['w_act']:.3g}·activations + {o['w_0']:.3f}`"
            + (f"; fastest among the fit's networks: {said}" if said else ""))


def _runtime_text(pred: dict) -> str:
    """The page's words for the runtime its tables were timed in: an onnxruntime table is ONNX
    Runtime's (the version its device records: :func:`device_description`), not eager PyTorch's (an
    audit's onnxruntime page said "eager PyTorch 2.14.1")."""
    d = pred["model"]["device"]
    if d.get("runtime") == "onnxruntime":
        return f"ONNX Runtime {d.get('onnxruntime', '(version not recorded)')} on networks exported from " \
               f"PyTorch {d.get('torch')}"
    return f"eager PyTorch {d.get('torch')}"


def page_lines(pred: dict, compare: dict | None = None, *, figure: str | None = None,
               bench: dict | None = None, stem: str = "docs/latency") -> list:
    """Markdown of ``docs/latency.md``: the predictor (``tools/latency.py``, ``pred`` as in
    ``docs/latency.json``) and, when run, the latency- vs FLOPs-budget search comparison
    (``tools/latency_compare.py``, ``docs/latency_search.json``)."""
    m = pred["model"]
    d, checks = m["device"], pred["checks"]
    lines = ["# Latency on this device", "",
             ("Generated by `python tools/latency.py` and `python tools/latency_compare.py` (`dan/latency.py`) "
              f"from `{stem}.json` and `{stem}_search.json`" if compare is not None else
              f"Generated by `python tools/latency.py` (`dan/latency.py`) from `{stem}.json`")
             + "; every number is measured.", "",
             "## The predictor", "",
             f"Network: {pred['what']}. Device: {d.get('cpu')} ({d.get('machine')}), runtime `{d.get('runtime')}` "
             f"({_runtime_text(pred)}, deploy form: BatchNorm folded, "
             f"{_format_text(m)}), "
             f"{d.get('threads')} thread(s), batch {d.get('batch')}. Tables: {m['entries']} entries over "
             f"{m['layers']} layers; correction `ms = {m['w_lut']:.3f}·Σtable + {m['w_act']:.3g}·activations + "
             f"{m['w_0']:.3f}` fitted on {m['fit'].get('architectures')} architectures (median error on them "
             f"{100 * m['fit'].get('median_abs_rel_error', float('nan')):.1f} %). Build and checks took "
             f"{pred['seconds']:.0f} s.", "",
             "Each check draws architectures uniformly from the space's candidates (not those of the fit), "
             "measures each whole network (medians of interleaved randomized rounds) and compares with the "
             "prediction; FLOPs, as a predictor of the same measured latencies, beside it. Target (issue 12): "
             "Spearman ≥ 0.9 and median absolute error ≤ 10 %.", "",
             "Errors are against the measured times scaled to the machine speed of the table build (a "
             "reference workload, the narrowest, a middle and the widest small network, is timed throughout "
             "each phase; 'machine speed' "
             "is its time then over its time during the check); the unscaled error is beside them.", "",
             "| check | architectures | Spearman (predictor) | Spearman (FLOPs) | median abs error | "
             "90th pct abs error | machine speed | median abs error, unscaled | target met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, c in enumerate(checks, 1):
        ok = c["spearman"] >= 0.9 and c["median_abs_rel_error"] <= 0.10
        lines.append(f"| {k} (seed {c['seed']}) | {c['architectures']} | {c['spearman']:.3f} | "
                     f"{c['spearman_flops']:.3f} | {100 * c['median_abs_rel_error']:.1f} % | "
                     f"{100 * c['p90_abs_rel_error']:.1f} % | {c['machine_speed']:.2f} | "
                     f"{100 * c['median_abs_rel_error_raw']:.1f} % | {'yes' if ok else '**no**'} |")
    if figure:
        lines += ["", f"![measured against predicted latency, and against FLOPs]({figure})"]
    if compare:
        lines += [""] + compare_lines(compare)
    if bench:
        lines += [""] + bench_lines(bench)
    return lines


def write_docs(md_path: str) -> None:
    """Write ``docs/latency.md`` from the JSON files beside it: ``latency.json`` (the predictor,
    needed), ``latency_search.json`` (the search comparison) and ``benchmarks.json`` (runtimes)."""
    from dan.report import write_page

    stem, folder = os.path.splitext(md_path)[0], os.path.dirname(os.path.abspath(md_path))

    def read(path):
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    pred = read(stem + ".json")
    figure = os.path.join("figures", os.path.basename(stem) + "_predictor.png")
    write_page(md_path, page_lines(pred, read(stem + "_search.json"), bench=read(os.path.join(folder, "benchmarks.json")),
                                   figure=figure if os.path.isfile(os.path.join(folder, figure)) else None,
                                   stem=os.path.relpath(stem) if not os.path.isabs(md_path) else stem))


def bench_lines(bench: dict) -> list:
    """Speed-up ÷ FLOPs ratio per runtime for the benchmark networks (from docs/benchmarks.json)."""
    forms = []
    for r in bench.get("inference", []):
        for v in r["batches"].values():
            forms += [f for f in v.get("runtimes", {}) if f not in forms]
    lines = ["## FLOPs that turn into time: speed-up ÷ FLOPs ratio per runtime", "",
             f"From `docs/benchmarks.json` (`python tools/bench.py --only inference`, measured "
             f"{bench.get('dates', {}).get('inference', '?')}; small-image ResNets at width 64, 32×32, α = 4, "
             f"{bench.get('machine', {}).get('threads', '?')} threads): the extracted small network's speed-up "
             "over the big one divided by the FLOPs ratio: per form (runtime @ threads, the same for both), the "
             "best such form (**best runtime**), and each network in its own fastest form (fastest forms). "
             "Target (issue 12): ≥ 0.8 at batch 1 and 64.", "",
             "| network | FLOPs ratio | batch | " + " | ".join(forms) + " | best runtime | fastest forms (big / small) |",
             "|---|---|---|" + "---|" * (len(forms) + 2)]
    for r in bench.get("inference", []):
        for b, v in r["batches"].items():
            rt = v.get("runtimes", {})
            cells = [f"{rt[f]['speedup_over_flops_ratio']:.2f}" if f in rt else "-" for f in forms]
            best, br = v.get("best"), v.get("best_runtime")
            tail = (f"**{br['speedup_over_flops_ratio']:.2f}** ({br['form']})" if br else "-") + " | " + \
                (f"{best['speedup_over_flops_ratio']:.2f} ({best['big']} / {best['small']})" if best else "-")
            lines.append(f"| {r['space']} | {r['flops_ratio']:.2f} | {b} | " + " | ".join(cells) + f" | {tail} |")
    return lines


def compare_lines(c: dict) -> list:
    """The latency- vs FLOPs-budget comparison section (see ``tools/latency_compare.py``)."""
    from dan.report import verdict

    st = c["settings"]
    lines = ["## A latency budget against a FLOPs budget at the same measured latency", "",
             f"Settings: `{st['config']}`, latency budget {st['budget']} of the widest small network "
             f"(batch {st['batch']}, {st['threads']} thread, "
             f"{'ONNX Runtime' if st.get('runtime') == 'onnxruntime' else 'eager PyTorch'}), "
             f"searches of {st['search_epochs']} epochs on "
             f"{st['train_subset']} training images, each found network retrained adjointly for "
             f"{st['retrain_epochs']} epochs on all 60k (`tools/retrain.py`, same seed), top-1 on the 10k test "
             f"images. The FLOPs search starts at the FLOPs of the latency search's network; when its network's "
             f"measured latency is more than {100 * st['match']:g} % off, its budget is moved once along the "
             f"latency model's elasticity and it searches again. Latencies of all final networks are measured "
             f"together at the end. Wall time {c['seconds'] / 60:.0f} min.", "",
             "| seed | latency search: ms | FLOPs | top-1 | FLOPs search: budget | ms | FLOPs | top-1 | ms ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in c["rows"]:
        lines.append(f"| {r['seed']} | {r['lat_ms']:.3f} | {r['lat_flops'] / 1e6:.2f}M | {100 * r['lat_top1']:.2f} | "
                     f"{r['flops_budget'] / 1e6:.2f}M | {r['flops_ms']:.3f} | {r['flops_flops'] / 1e6:.2f}M | "
                     f"{100 * r['flops_top1']:.2f} | {r['flops_ms'] / r['lat_ms']:.3f} |")
    a = [r["lat_top1"] * 100 for r in c["rows"]]
    b = [r["flops_top1"] * 100 for r in c["rows"]]
    d, se, v = verdict(a, b, True, 0.0)
    ms_a = [r["lat_ms"] for r in c["rows"]]
    ms_b = [r["flops_ms"] for r in c["rows"]]
    lines += ["", f"Top-1: latency search {statistics.fmean(a):.2f} ± {_sd(a):.2f}, FLOPs search "
              f"{statistics.fmean(b):.2f} ± {_sd(b):.2f}; difference {d:+.2f} (se {se:.2f}): **{v.strip('*')}** "
              f"(2-standard-error rule, as docs/results.md). Measured ms: {statistics.fmean(ms_a):.3f} against "
              f"{statistics.fmean(ms_b):.3f}."]
    return lines


def _sd(v: list) -> float:
    return statistics.stdev(v) if len(v) > 1 else 0.0


def plot(checks: list, path: str) -> None:
    """Measured ms against predicted ms and against FLOPs, for the first check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = checks[0]["rows"]
    m = [r["measured_ms"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].scatter([r["predicted_ms"] for r in rows], m, s=12)
    lo, hi = min(m), max(m)
    ax[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax[0].set(xlabel="predicted ms", ylabel="measured ms", title=f"predictor (Spearman {checks[0]['spearman']:.3f})")
    ax[1].scatter([r["flops"] / 1e6 for r in rows], m, s=12, color="tab:orange")
    ax[1].set(xlabel="MFLOPs", ylabel="measured ms", title=f"FLOPs (Spearman {checks[0]['spearman_flops']:.3f})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
