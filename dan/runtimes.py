"""The forms a deployable network can run in on a CPU, and which is fastest.

FLOPs savings turn into time only when per-call overhead does not dominate: at batch 1 a thin
network spends most of its time in the framework, not in its convolutions. The forms measured
(each from :func:`dan.deploy.deploy_form`, BatchNorm folded):

* ``eager`` — PyTorch eager, weights and input channels-last (the form every summary times);
* ``eager_nchw`` — PyTorch eager, contiguous (NCHW): thin convs at batch 1 are often faster so;
* ``torchscript`` — traced, frozen and ``optimize_for_inference`` (conv+ReLU fusion, constant
  folding, oneDNN layout choices), NCHW input;
* ``onnxruntime`` — the ``small.onnx`` export in ONNX Runtime with all graph optimizations (needs
  the ``dan[onnx]`` extra; left out without it).

``torch.compile`` (inductor) is not among them: on this CPU-only machine it compiles for minutes
per network and shape, which a benchmark of many shapes cannot afford; users with a warm cache can
add it. Each form's threads are PyTorch's (ONNX Runtime is given the same number).
"""

from __future__ import annotations

import os
import tempfile
import warnings

import torch
import torch.nn as nn

from dan import onnx_export
from dan.deploy import deploy_form, layout_for

FORMS = ("eager", "eager_nchw", "torchscript", "onnxruntime")


def forms(net: nn.Module, input_shape: tuple, folder: str | None = None, only=FORMS) -> dict:
    """A zero-argument callable per available form, each running ``net`` once on a fixed input
    of ``input_shape``. ONNX files go to ``folder`` (a temporary folder by default, kept alive by
    the returned closures)."""
    x = torch.randn(tuple(input_shape))
    out = {}
    fast = deploy_form(net, layout_for(net, input_shape))  # (NCHW where channels-last cannot run)
    nchw = deploy_form(net, "contiguous")
    if "eager" in only:
        xc = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
        out["eager"] = _no_grad(lambda: fast(xc))
    if "eager_nchw" in only:
        out["eager_nchw"] = _no_grad(lambda: nchw(x))
    if "torchscript" in only:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ts = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(nchw, x).eval()))
            except Exception:  # a network TorchScript cannot trace: the other forms stand
                ts = None
        if ts is not None:
            out["torchscript"] = _no_grad(lambda: ts(x))
    if "onnxruntime" in only and onnx_export.available():
        tmp = None
        if folder is None:
            tmp = tempfile.TemporaryDirectory()
            folder = tmp.name
        path = os.path.join(folder, f"net_{id(net)}.onnx")
        onnx_export.export(nchw, path, tuple(input_shape))
        sess = onnx_export.session(path)
        feed = {sess.get_inputs()[0].name: x.numpy()}

        def run(sess=sess, feed=feed, keep=tmp):  # keep: the folder lives as long as the closure
            sess.run(None, feed)
        out["onnxruntime"] = run
    return out


def _no_grad(fn):
    def run():
        with torch.no_grad():
            fn()
    return run
