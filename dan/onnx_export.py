"""ONNX: the deployable network as ``small.onnx``, checked and timed with ONNX Runtime.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'dan[onnx]'``). Without them a run
says once how to get them (a warning) and goes on without the file.

The network exported is :func:`dan.deploy.deploy_form` (BatchNorm folded into the convs), with a
dynamic batch dimension. The exporter is PyTorch's TorchScript-based one (``dynamo=False``, opset
:data:`OPSET`): it takes a fraction of a second. Where it fails, the ``torch.export``-based exporter
(``onnxscript``, part of the extra) writes the file at opset :data:`OPSET_TORCH_EXPORT`: e.g. an
adaptive pooling to an output size that does not divide its input (torchvision's VGG and AlexNet
on inputs under 224 pixels: their 7×7 or 6×6 pooling then upsamples a 1×1 or 2×2 map), which the
TorchScript exporter refuses (coverage run of the forty-sixth session: 9 of 68 torchvision models at
64 pixels), or a PyTorch release without the old exporter. ``<name>.json`` records the exporter and
the opset the file has. Every file is checked right after it is written: ONNX Runtime's output on random
inputs at batch 1 and 2 against the PyTorch network's, max absolute difference ≤ :data:`TOLERANCE`
times the largest logit's magnitude when that is above 1, or twice PyTorch's own float32 error (its
difference from the same network in float64), whichever is larger: float32 sums taken in another
order differ relative to the values, and an ill-conditioned network (a short or diverged training:
logits in the thousands) is as far from exact in PyTorch as in ONNX Runtime (a 2-epoch
tf_efficientnet_b0: 0.155 from ONNX Runtime, 0.88 from float64, at logits near 1900).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import warnings

import torch
import torch.nn as nn

from dan.checkpoint import atomic_write
from dan.errors import first_line, out_of_memory
from dan.timing import device_of, median_ms

OPSET = 17
# the torch.export-based exporter's lowest opset: asked for 17 it converts its opset-18 graph down,
# which fails on some graphs (AlexNet's: "No initializer or constant input") and keeps 18 anyway
OPSET_TORCH_EXPORT = 18
TOLERANCE = 1e-4
INSTALL_HINT = "pip install 'dan[onnx]' (or: pip install onnx onnxruntime onnxscript)"
_warned = [False]


def available() -> bool:
    """Whether onnx and onnxruntime import; warns once per process when they do not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        if not _warned[0]:
            _warned[0] = True
            warnings.warn(f"small.onnx is not written and ONNX Runtime not timed: {INSTALL_HINT}",
                          stacklevel=2)
        return False


def export(model: nn.Module, path: str, input_shape: tuple) -> str:
    """Write ``model`` (eval mode, as given) to ``path`` as ONNX with a dynamic batch dimension;
    returns the exporter that wrote it, ``"torchscript"`` or ``"torch.export"`` (see the module
    docstring). Raises RuntimeError naming both exporters' failures when neither can."""
    model = model.eval()
    example = torch.zeros((2,) + tuple(input_shape[1:]), device=device_of(model))
    used = []

    def write(tmp):
        try:
            with warnings.catch_warnings(), _native_output_silenced():
                warnings.simplefilter("ignore")  # the deprecation notice of the TorchScript exporter
                torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=OPSET,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            used.append("torchscript")
            return
        except (TypeError, RuntimeError, NotImplementedError, AttributeError, AssertionError) as e:
            first = first_line(e, 200)
        try:
            import onnxscript  # noqa: F401  (what the torch.export-based exporter needs)
        except ImportError:
            raise RuntimeError(f"the TorchScript exporter failed ({first}) and the torch.export-based one "
                               f"needs onnxscript: {INSTALL_HINT}") from None
        batch = torch.export.Dim("batch", min=1, max=65536)
        try:
            with warnings.catch_warnings(), _logger_level("torch.onnx", logging.ERROR):
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), tmp, dynamo=True, opset_version=OPSET_TORCH_EXPORT,
                                  input_names=["input"], output_names=["logits"], dynamic_shapes=({0: batch},),
                                  verbose=False)
        except Exception as e:
            if out_of_memory(e):
                raise
            raise RuntimeError(f"the TorchScript exporter failed ({first}), and the torch.export-based one "
                               f"({first_line(e, 200)})") from e
        used.append("torch.export")

    atomic_write(write, path, ".onnx")
    return used[-1]


def file_opset(path: str) -> int | None:
    """The default-domain opset an ONNX file declares (None if it declares none)."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _native_output_silenced():
    """Standard output and error closed at the file-descriptor level for the block: when the
    TorchScript exporter fails, its C++ side prints the whole TorchScript graph to standard output
    (hundreds of lines for a network the fallback then exports fine); the exception keeps the reason."""
    saved = {}
    try:
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            if stream is not None:
                stream.flush()
            saved[fd] = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no usable descriptors: nothing to silence
        for fd in saved.values():
            os.close(fd)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy_ in saved.items():
            os.dup2(copy_, fd)
            os.close(copy_)


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    """``logging.getLogger(name)`` at ``level`` for the block (the torch.export-based exporter logs
    its opset choice and progress as warnings)."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def session(path: str, threads: int | None = None):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (default: as
    many as PyTorch uses, so that the two runtimes are timed alike)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # no busy-waiting between runs: spinning pool threads would steal the cores from whatever runs
    # next (PyTorch timed in the same rounds, the rest of the program) and bias every comparison
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def verify(model: nn.Module, path: str, input_shape: tuple, *, seed: int = 0) -> float:
    """Max absolute difference between ONNX Runtime on ``path`` and ``model`` on random inputs
    (batch 1 and 2)."""
    return compare(model, path, input_shape, seed=seed)[0]


@torch.no_grad()
def compare(model: nn.Module, path: str, input_shape: tuple, *, seed: int = 0) -> tuple[float, float, float]:
    """On the inputs of :func:`verify`: (max absolute difference, largest magnitude of the PyTorch
    outputs, PyTorch's own float32 error: its max absolute difference from the same network in
    float64, or 0 where the network cannot run in float64)."""
    model = model.eval()
    sess = session(path)
    name = sess.get_inputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    exact = _float64(model)
    worst = scale = own = 0.0
    for b in (1, 2):
        x = torch.randn((b,) + tuple(input_shape[1:]), generator=gen)
        ours = model(x.to(device_of(model))).float().cpu()
        theirs = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
        worst = max(worst, float((ours - theirs).abs().max()))
        scale = max(scale, float(ours.abs().max()))
        if exact is not None:
            own = max(own, float((exact(x.double()) - ours.double()).abs().max()))
    return worst, scale, own


def _float64(model: nn.Module):
    """A float64 copy of ``model`` on the CPU, or None."""
    try:
        return copy.deepcopy(model).cpu().double()
    except Exception:  # modules that refuse a copy or a dtype change: no reference, the plain check
        return None


def latency(path: str, input_shape: tuple, *, warmup: int = 3, repeats: int = 10,
            min_time: float = 0.5, sess=None) -> float:
    """Median milliseconds of one ONNX Runtime forward pass at ``input_shape`` (as
    :func:`dan.deploy.measure_latency` does for PyTorch)."""
    import numpy as np

    sess = sess or session(path)
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32)}
    return median_ms(lambda: sess.run(None, feed), warmup=warmup, repeats=repeats, min_time=min_time)


def save_and_check(model: nn.Module, folder: str, input_shape: tuple, name: str = "small") -> dict | None:
    """Export ``model`` to ``<folder>/<name>.onnx`` and check it; returns what ``<name>.json``
    records under ``"onnx"`` (file, opset, exporter, max_abs_diff, max_abs_logit, float32_error,
    verified, onnxruntime), or
    None without the extra.
    A file that fails its check is kept (it may still be useful) and said so in a warning."""
    if not available():
        return None
    path = os.path.join(folder, f"{name}.onnx")
    try:
        exporter = export(model, path, input_shape)
    except Exception as e:  # an operator ONNX lacks: the run's other files stand
        warnings.warn(f"{path} not written: the ONNX export failed ({first_line(e, 400)}); "
                      f"{name}.pt2 and {name}.pt are written", stacklevel=2)
        return None
    diff, scale, own = compare(model, path, input_shape)
    allowed = max(TOLERANCE * max(1.0, scale), 2 * own)
    ok = diff <= allowed
    if not ok:
        warnings.warn(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {allowed:.2g}: {TOLERANCE:g} of "
                      f"the largest logit, or twice PyTorch's own float32 error); use {name}.pt2 or {name}.pt "
                      f"instead", stacklevel=2)
    import onnxruntime

    return {"file": f"{name}.onnx", "opset": file_opset(path), "exporter": exporter, "max_abs_diff": diff,
            "max_abs_logit": scale, "float32_error": own, "verified": ok, "onnxruntime": onnxruntime.__version__}
