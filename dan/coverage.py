"""Model-zoo coverage (issue 11): which networks the adjoint conversion handles, exactly.

Every model goes through what a user's run does with it, on a random batch:

1. **convert** with :func:`dan.to_adjoint` (α = 4, every searchable group at a quarter width);
   The big path must equal the original model (eval, same tolerance as below).
2. **one adjoint training step** (both paths, :func:`dan.adjoint_loss` at λ = 1, SGD), so the
   small path's backward and the shared weights' update are exercised, not only a forward;
3. **extract** the small network with :func:`dan.extract_small`;
4. **equality**: in eval mode the extracted network's logits must equal the small path's
   (largest absolute difference over the largest absolute logit ≤ ``RTOL``): a wrong extraction is
   a failure, never a pass;
5. **count** the big and the small network's FLOPs and parameters (:func:`dan.count`);
6. **deploy** it as a run does (:func:`dan.deploy.save_deployable`): ``small.pt`` and ``small.pt2``
   loaded back must give the extracted network's logits (relative error ≤ ``RTOL``), and
   ``small.onnx`` must pass its ONNX Runtime check (with the ``dan[onnx]`` extra). A deploy failure
   is a column of its own, not a change of the outcome: the network converted and extracted exactly.

The outcome of a model is ``pass``, ``refused`` (a clear :class:`~dan.errors.UnsupportedModelError`,
whose first line is the reason), ``wrong`` (extraction differs from the small path) or ``crash``
(any other exception: a bug of the conversion, reported with its type). ``tools/coverage.py``
runs the torchvision zoo and a fixed list of timm models and writes ``docs/coverage.md``;
``tests/test_coverage.py`` runs a fast subset.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

import torch
import torch.nn as nn

from dan.errors import UnsupportedModelError, first_line

RTOL = 1e-4  # extracted vs small path, relative to the largest logit
# soft masks at a 0/1 point vs the small path, both in float64 (vertex_error): rounding reaches
# 4e-13 (RegNetY-128GF); a float32 step inside the float64 computation shows as 1e-8 (NFNets'
# fan-in under a float32 mask, forty-fifth session), a relaxation that is not exact as 1e-3 or more
VERTEX_RTOL = 1e-10
ALPHA = 4
MIN_SIZE = 64  # input side used when a model accepts it (its weights' min_size otherwise)

# A fixed list of timm models across its CNN families (issue 11: >= 60). Built with
# pretrained=False; timm is an optional extra (``pip install dan[timm]``).
TIMM_MODELS = [
    # resnet / resnext / resnest / res2net / senet
    "resnet18", "resnet26d", "resnet50", "resnext26ts", "seresnext26d_32x4d", "resnest14d",
    "res2net50_14w_8s", "res2next50", "resnetrs50", "ecaresnet26t", "skresnet18",
    # regnet
    "regnetx_002", "regnety_002", "regnetz_b16",
    # efficientnet family, mobilenets, mnasnet, ghostnet, mixnet, fbnet, lcnet
    "efficientnet_b0", "efficientnet_lite0", "efficientnetv2_rw_t", "tf_efficientnet_b0",
    "mobilenetv2_050", "mobilenetv3_small_050", "mobilenetv3_large_100", "mnasnet_small",
    "ghostnet_100", "mixnet_s", "fbnetc_100", "lcnet_050", "tinynet_e", "semnasnet_050",
    # convnext / convnext-like
    "convnext_atto", "convnext_femto", "convnextv2_atto",
    # densenet, dpn, inception, xception
    "densenet121", "densenetblur121d", "dpn68", "inception_v3", "inception_v4",
    "inception_resnet_v2", "xception41", "legacy_xception",
    # cspnet, darknet, vovnet, repvgg, rexnet, hrnet, dla, nfnet
    "cspresnet50", "cspdarknet53", "darknet17", "ese_vovnet19b_dw", "vovnet39a", "repvgg_a0",
    "rexnet_100", "hrnet_w18_small", "dla34", "dla46_c", "nf_resnet26", "dm_nfnet_f0", "nfnet_l0",
    # others: selecsls, hardcorenas, tresnet, gernet, vgg, resnetv2, bat_resnext, cs3darknet
    "selecsls42b", "hardcorenas_a", "tresnet_m", "gernet_s", "vgg11", "resnetv2_50",
    "cs3darknet_s", "repghostnet_050", "fastvit_t8",
]


@dataclass
class Outcome:
    """One model's row of the coverage page."""

    source: str  # torchvision | timm | user
    name: str
    status: str  # pass | refused | wrong | crash
    reason: str = ""
    input_size: int = 0
    flops_ratio: float = 0.0  # big / small
    params_ratio: float = 0.0
    max_rel_err: float = float("nan")
    seconds: float = 0.0
    # dan.memory's estimate of what the training forward keeps for the backward pass, over what a
    # real forward kept (1.0: exact); nan where the estimate could not be made (neither meta nor fake tensors)
    memory_estimate: float = float("nan")
    # DAN search's relaxation at a 0/1 point: the small path at the quarter widths against every group
    # at full width under channel masks keeping those widths (relative error; see vertex_error)
    vertex_rel_err: float = float("nan")
    # the deployable files (step 6): small.pt / small.pt2 loaded back against the extracted network
    # (largest relative error of the two; nan: not made), and small.onnx: the exporter that wrote it
    # ("torchscript" or "torch.export"), "not verified", "not written: <reason>" or "" (no extra)
    deploy_rel_err: float = float("nan")
    onnx: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def check_model(model: nn.Module, input_shape: tuple, *, alpha: float = ALPHA, seed: int = 0,
                deploy: bool = True) -> dict:
    """Convert, train one adjoint step, extract, compare, count and (``deploy``) deploy ``model``
    (see the module docstring). Returns the measured fields of an :class:`Outcome` (``status``
    ``pass`` or ``wrong``); conversion errors propagate."""
    from dan.adjoint import extract_big, extract_small, to_adjoint
    from dan.cost import count_layers
    from dan.loss import adjoint_loss
    from dan.memory import activation_bytes, kept_for_backward

    g = torch.Generator().manual_seed(seed)
    anet = to_adjoint(model, alpha=alpha, input_shape=(1,) + tuple(input_shape[1:]))
    # batch 4: at batch 2 Inception v3 itself turns NaN after a training step (1x1 maps)
    x = torch.randn((4,) + tuple(input_shape[1:]), generator=g)
    with torch.no_grad():  # the conversion must not change the network it starts from
        ref, mine = model.eval()(x), anet.eval()(x)[0]
    err = float((ref - mine).abs().max()) / (float(ref.abs().max()) or 1.0)
    if not err <= RTOL:
        return {"status": "wrong", "reason": f"the big path differs from the original model (relative error "
                f"{err:.2e})", "max_rel_err": err}
    anet.train()
    estimate = activation_bytes(anet, tuple(x.shape))  # before the real forward, as a run's check is
    with kept_for_backward({}) as kept:
        big, small = anet(x)
    memory_estimate = estimate[0] / max(1, sum(kept.values())) if estimate is not None else float("nan")
    y = torch.randint(0, big.shape[1], (4,), generator=g)
    loss = adjoint_loss(big, small, y, 1.0)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the adjoint loss of one step is {float(loss)}")
    params = [p for p in anet.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    loss.backward()
    opt.step()
    anet.eval()
    net = extract_small(anet)
    with torch.no_grad():
        ref = anet.small(x)
        out = net(x)
    scale = float(ref.abs().max()) or 1.0
    err = float((out - ref).abs().max()) / scale if out.shape == ref.shape else float("inf")
    shape = (1,) + tuple(input_shape[1:])
    cb, cs = count_layers(extract_big(anet), shape), count_layers(net, shape)
    ok = math.isfinite(err) and err <= RTOL
    widths = {grp.name: grp.width for grp in anet.groups if not grp.fixed}
    deployed = deploy_check(net, input_shape, x) if ok and deploy else {}
    return {**deployed, "status": "pass" if ok else "wrong",
            "reason": "" if ok else f"extracted network differs from the small path (relative error {err:.2e})",
            "flops_ratio": cb.flops / max(1, cs.flops), "params_ratio": cb.params / max(1, cs.params),
            "max_rel_err": err, "memory_estimate": memory_estimate,
            "vertex_rel_err": vertex_error(model, widths, x, seed=seed)}


def deploy_check(net: nn.Module, input_shape: tuple, x: torch.Tensor) -> dict:
    """Step 6 of the module docstring on the extracted network ``net`` (eval mode) and the batch
    ``x``: the :class:`Outcome` fields ``deploy_rel_err`` and ``onnx``. An exception while writing
    or loading the files is recorded in ``onnx``'s place as ``deploy failed: <reason>``."""
    import tempfile
    import warnings

    from dan.deploy import load_deployable, save_deployable

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            meta = save_deployable(net, folder, input_shape)  # writes a folded copy; net stays as it is
            with torch.no_grad():
                ref = net(x)
                scale = float(ref.abs().max()) or 1.0
                err = max(float((load_deployable(f"{folder}/small.{ext}")(x) - ref).abs().max()) / scale
                          for ext in ("pt", "pt2"))
        except Exception as e:  # a bug of the deploy step: recorded, the zoo run goes on
            return {"onnx": f"deploy failed: {type(e).__name__}: {first_line(e)}"}
    if "onnx" in meta:
        onnx = meta["onnx"]["exporter"] if meta["onnx"]["verified"] else "not verified"
    else:
        said = [str(w.message) for w in caught if "not written: " in str(w.message)]
        onnx = "not written: " + said[0].split("not written: ", 1)[1][:300] if said else ""
    return {"deploy_rel_err": err, "onnx": onnx}


def vertex_error(model: nn.Module, widths: dict, x: torch.Tensor, *, seed: int = 0) -> float:
    """How far DAN search's soft channel masks are from the network they stand for, at a 0/1 point
    (where an architecture step's Gumbel-softmax tends as τ falls): the small path at ``widths``
    against every searchable group at full width under masks that keep those widths, in eval mode,
    as the largest absolute difference over the largest absolute logit. The weights are the model's
    plus small noise, so that no zero-initialised term (a bias, GRN's γ and β) hides a channel the
    mask should have removed. Computed in float64 (converted in float32, as the shape pass runs):
    in float32 the two computations' rounding alone reached 2e-2 on RegNetY-128GF (27 blocks of a
    randomly initialised 128-GF network), which is not the relaxation's error (float64: 4e-13).
    0 up to rounding where the relaxation is exact at its vertices."""
    from dan.adjoint import to_adjoint

    g = torch.Generator().manual_seed(seed)
    noisy = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p))
    anet = to_adjoint(noisy, alpha=1, input_shape=(1,) + tuple(x.shape[1:]), copy_model=False).eval().double()
    groups = [grp for grp in anet.groups if grp.name in widths]
    x = x.double()
    with torch.no_grad():
        for grp in groups:
            grp.width = widths[grp.name]
        hard = anet.small(x)
        for grp in groups:
            grp.mask_to(widths[grp.name])
        soft = anet.small(x)
    return float((soft - hard).abs().max()) / (float(hard.abs().max()) or 1.0)


def run_one(source: str, name: str, build: Callable[[], nn.Module], input_shape: tuple, *,
            deploy: bool = True) -> Outcome:
    """:func:`check_model` with the outcome classified; never raises for the model's sake."""
    start = time.perf_counter()
    row = Outcome(source, name, "crash", input_size=input_shape[-1])
    try:
        torch.manual_seed(0)
        model = build()
        row.__dict__.update(check_model(model, input_shape, deploy=deploy))
    except UnsupportedModelError as e:
        row.status, row.reason = "refused", first_line(e)
    except Exception as e:  # a bug of the conversion: recorded with its type, the run goes on
        row.status, row.reason = "crash", f"{type(e).__name__}: {first_line(e)}"
    row.seconds = time.perf_counter() - start
    return row


def torchvision_models() -> list[tuple[str, Callable[[], nn.Module], tuple]]:
    """Every classification builder of ``torchvision.models``: (name, build, input shape)."""
    import torchvision

    from dan.models import create

    out = []
    for name in torchvision.models.list_models(module=torchvision.models):
        size = MIN_SIZE
        try:
            meta = torchvision.models.get_model_weights(name).DEFAULT.meta
            size = max(size, *meta.get("min_size", (0, 0)))
        except (ValueError, AttributeError):
            pass
        if name.startswith(("vit_", "maxvit")):  # fixed-size position embeddings / windows
            size = 224
        # built as `--model torchvision.<name>` builds it (dan.models: GoogLeNet and Inception v3
        # without their auxiliary classifiers)
        out.append((name, lambda n=name: create(f"torchvision.{n}", num_classes=10, in_channels=3),
                    (1, 3, size, size)))
    return out


def timm_models(names: Iterable[str] = TIMM_MODELS) -> list[tuple[str, Callable[[], nn.Module], tuple]]:
    """The fixed timm list: (name, build, input shape). Needs timm (``pip install dan[timm]``)."""
    import timm

    out = []
    for name in names:
        def build(n=name):
            return timm.create_model(n, pretrained=False, num_classes=10)
        size = 96
        if name.startswith(("inception", "legacy_xception", "xception")):
            size = 160  # their stems shrink the input by 32 before the first block
        out.append((name, build, (1, 3, size, size)))
    return out


def run_zoo(entries: list, source: str, log: Optional[Callable[[str], None]] = None,
            only: Optional[set] = None, *, deploy: bool = True) -> list[Outcome]:
    rows = []
    for name, build, shape in entries:
        if only and name not in only:
            continue
        row = run_one(source, name, build, shape, deploy=deploy)
        rows.append(row)
        if log:
            log(f"{source}.{name}: {row.status} {row.reason} ({row.seconds:.1f}s)")
    return rows


def _memory_summary(rows: list[Outcome]) -> str:
    """How the memory estimate did on the passing models: exact (within 0.1 %), off, not made."""
    est = [r.memory_estimate for r in rows if math.isfinite(r.memory_estimate)]
    exact = sum(abs(e - 1.0) <= 1e-3 for e in est)
    text = f"exact on {exact} of {len(rows)} passing models"
    off = [e for e in est if abs(e - 1.0) > 1e-3]
    if off:
        text += f", off on {len(off)} ({min(off):.3f} to {max(off):.3f} of the real)"
    if len(est) < len(rows):
        text += f", not made on {len(rows) - len(est)} (the check is skipped for them)"
    return text


def _vertex_summary(rows: list[Outcome]) -> str:
    """On how many passing models DAN search's soft masks at a 0/1 point are the network they stand for."""
    errs = [r.vertex_rel_err for r in rows if math.isfinite(r.vertex_rel_err)]
    off = sorted(r.name for r in rows if math.isfinite(r.vertex_rel_err) and r.vertex_rel_err > VERTEX_RTOL)
    text = f"at 0/1 exact on {len(errs) - len(off)} of {len(rows)} passing models"
    return text + (f" (not on {', '.join(off)})" if off else "")


def _deploy_summary(rows: list[Outcome]) -> str:
    """How the deployable files did on the passing models (step 6 of the module docstring)."""
    made = [r for r in rows if math.isfinite(r.deploy_rel_err)]
    equal = sum(r.deploy_rel_err <= RTOL for r in made)
    by = {e: sum(r.onnx == e for r in rows) for e in ("torchscript", "torch.export")}
    text = (f"`small.pt` and `small.pt2` loaded back equal the extracted network on {equal} of {len(rows)} "
            f"passing models; `small.onnx` verified in ONNX Runtime on {sum(by.values())} of {len(rows)}")
    if by["torch.export"]:
        text += f" ({by['torch.export']} by the torch.export-based exporter, which the TorchScript-based one refused)"
    if not any(r.onnx for r in rows):
        text += " (the `dan[onnx]` extra is not installed here)"
    return text


def markdown(rows: list[Outcome], *, header: str = "") -> str:
    """The coverage page: a summary per source, then one row per model."""
    lines = ["# Model-zoo coverage of the adjoint conversion", "",
             "Generated by `python tools/coverage.py` (`dan/coverage.py`). Each model: convert "
             f"(α = {ALPHA}; the big path must equal the original model) → one adjoint training step → "
             f"extract → the extracted network equals the small path in eval mode (relative error ≤ "
             f"{RTOL:g}) → count. Random weights, batch 4, the input side in the table. Memory "
             "estimate: what the check before a run (`dan/memory.py`, allocating nothing) computes the "
             "training forward keeps for the backward pass, over what the real forward kept. Soft masks "
             "at 0/1: DAN search's relaxation (every group at full width, channel masks) against the "
             "small path at the quarter widths it stands for (`dan.coverage.vertex_error`, in float64, so "
             f"that rounding is not counted; relative error; exact when ≤ {VERTEX_RTOL:g}). Deploy: the "
             "files a run writes (`dan.deploy.save_deployable`) for the extracted network, `small.pt` "
             "(TorchScript) and `small.pt2` (torch.export) loaded back against it (relative error), and "
             "`small.onnx` checked in ONNX Runtime (which exporter wrote it).", ""]
    if header:
        lines += [header, ""]
    for source in sorted({r.source for r in rows}):
        rs = [r for r in rows if r.source == source]
        n = {s: sum(r.status == s for r in rs) for s in ("pass", "refused", "wrong", "crash")}
        lines.append(f"- **{source}**: {n['pass']} of {len(rs)} pass; {n['refused']} refused with a clear "
                     f"reason; {n['wrong']} wrong extractions; {n['crash']} crashes. Memory estimate "
                     f"{_memory_summary([r for r in rs if r.status == 'pass'])}. Soft masks "
                     f"{_vertex_summary([r for r in rs if r.status == 'pass'])}. Deploy: "
                     f"{_deploy_summary([r for r in rs if r.status == 'pass'])}.")
    lines += ["", "| source | model | outcome | FLOPs big/small | params big/small | rel. error | memory estimate "
              "| soft masks at 0/1 | deploy rel. error | ONNX | input | s | reason |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = lambda v: f"{v:.2f}×" if r.status in ("pass", "wrong") else ""
        err = f"{r.max_rel_err:.1e}" if r.status in ("pass", "wrong") else ""
        mem = f"{r.memory_estimate:.3f}" if math.isfinite(r.memory_estimate) else ""
        vertex = f"{r.vertex_rel_err:.1e}" if math.isfinite(r.vertex_rel_err) else ""
        deployed = f"{r.deploy_rel_err:.1e}" if math.isfinite(r.deploy_rel_err) else ""
        reason, onnx = (t.replace("|", "\\|") for t in (r.reason, r.onnx))
        lines.append(f"| {r.source} | {r.name} | {r.status} | {ratio(r.flops_ratio)} | {ratio(r.params_ratio)} "
                     f"| {err} | {mem} | {vertex} | {deployed} | {onnx} | {r.input_size} | {r.seconds:.1f} | {reason} |")
    return "\n".join(lines) + "\n"
