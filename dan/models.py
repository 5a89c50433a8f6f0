"""Building the base network of a config: by name, by the user's code, or as an object.

``model.space`` (``--model`` / ``--space`` on the command line) names the network:

* a search space of the ``search_spaces`` registry (``resnet18_small``, ``resnet50``...);
* ``torchvision.<name>``: any torchvision classification builder (``model.args`` are passed on,
  e.g. ``weights: IMAGENET1K_V2``, whose classifier is then replaced for the data's classes; GoogLeNet and Inception v3 without their auxiliary classifiers
  unless ``aux_logits: true``, which the conversion refuses);
* ``timm.<name>``: a timm model (the optional extra ``pip install 'dan[timm]'``), built with
  ``pretrained=False`` unless ``model.args`` says ``pretrained: true``;
* ``package.module:factory``: the user's own builder. It is called with ``model.args`` plus
  ``num_classes`` and ``in_channels`` when its signature takes them.

**Trust.** ``package.module:factory`` imports and runs code. It is imported only if the user named
it: on the command line (``--model``, ``--set model.space=...``), in their own ``--config`` file,
or from Python with :func:`trust`. A name read from an ``arch.json`` (or from the config stored
inside one), or from a run's saved ``config.yaml`` given as ``--config``, is not trusted by being
there, so such a file from elsewhere stays data: building it is refused with a message that says
how to allow the name. A function of Python's standard library (``os:system``) is refused, trusted
or not. Registered spaces, torchvision and timm names import nothing but those packages.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import urllib.parse

import torch
import torch.nn as nn

import search_spaces
from dan.downloads import withholding, would_download
from dan.errors import UserError, setting

# torchvision models built without their auxiliary classifiers unless model.args says otherwise
AUX_CLASSIFIERS = ("googlenet", "inception_v3")

_CODE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
_TIMM = re.compile(r"timm\.[\w.\-]+")
_TRUSTED: set[str] = set()
# top-level modules whose functions are never a network's or a dataset's builder (user_function)
STDLIB_MODULES = frozenset(sys.stdlib_module_names) | {"builtins"}


def object_space(model: nn.Module) -> str:
    """What ``model.space`` and ``arch.json`` record for a network passed as an object."""
    return f"<object {type(model).__name__}>"


def kind(space: str) -> str:
    """``registered``, ``torchvision``, ``timm``, ``code`` (``package.module:factory``) or
    ``object`` (searched from Python on a model object); a :class:`UserError` for anything else.
    Imports nothing."""
    if not isinstance(space, str):
        raise UserError(f"model.space must be a name, got {space!r}")
    if re.fullmatch(r"<object [\w.]+>", space):
        return "object"
    if space.startswith("torchvision."):
        return "torchvision"
    if _TIMM.fullmatch(space):
        return "timm"
    if ":" in space:
        if not _CODE.fullmatch(space):
            raise UserError(f"model '{space}': write your builder as package.module:function")
        return "code"
    if space in search_spaces.list_spaces():
        return "registered"
    raise UserError(f"unknown model '{space}': a search space ({', '.join(search_spaces.list_spaces())}), "
                    f"torchvision.<name>, timm.<name> or package.module:function")


def trust(*names: str) -> None:
    """Allow :func:`create` to import these ``package.module:factory`` names (the ones a user
    typed). The command-line tools call it for ``--model``, ``--set model.space`` and ``--config``
    (a user's own file: not a config.yaml a run saved, :func:`dan.saved.saved_by_run`)."""
    _TRUSTED.update(n for n in names if isinstance(n, str) and ":" in n)


def user_function(name: str, what: str, flag: str):
    """The function a ``package.module:function`` name points to (a ``what``: "model" or "dataset"),
    imported only if the user trusted the name (:func:`trust`; ``flag`` is the option that names it).
    A function of Python's standard library (or ``builtins``) is refused, trusted or not: it builds
    no network nor dataset, and an audit's config file with ``model: {space: "os:system", args:
    {command: ...}}`` ran the command, under ``--dry-run`` too."""
    top = name.split(":")[0].split(".")[0]
    if top in STDLIB_MODULES:
        raise UserError(f"{what} '{name}' names a function of Python's standard library ({top}), not a {what} "
                        f"builder: name your own package.module:function")
    if name not in _TRUSTED:
        raise UserError(f"{what} '{name}' would import and run the module {name.split(':')[0]}, which you did not "
                        f"name: pass {flag} {name} if you trust it (a name in your own --config file is trusted; "
                        f"one in an arch.json or a run's saved config.yaml is not: a file with a code: key or "
                        f"every key a run saves counts as one; delete its code: line to make a copy your own)")
    module, _, func = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except ImportError as e:
        raise UserError(f"{what} '{name}': cannot import {module} ({e}): is it on PYTHONPATH?") from e
    except AttributeError:
        raise UserError(f"{what} '{name}': {module} has no '{func}'") from None
    if not callable(fn):
        raise UserError(f"{what} '{name}': {module}.{func} is a {type(fn).__name__}, not a function")
    return fn


def _weights_withheld(name: str, weights) -> bool:
    """Whether torchvision's ``weights`` for model ``name`` would be downloaded (not in torch hub's
    cache) and a dry run withholds the download (:func:`dan.downloads.would_download`)."""
    import torchvision

    try:
        url = torchvision.models.get_model_weights(name).verify(weights).url
    except (TypeError, ValueError, KeyError, AttributeError):  # unknown weights: the build says so
        return False
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))
    return not os.path.isfile(path) and would_download(f"torchvision.{name} weights {weights} into {path}")


def create(space: str, args: dict | None = None, *, num_classes: int, in_channels: int) -> nn.Module:
    """The network ``space`` names (see the module docstring), for ``num_classes`` classes and
    ``in_channels`` input channels."""
    args = dict(args or {})
    k = kind(space)
    if k == "object":
        raise UserError(f"this network was searched as a Python object ({space[8:-1]}): rebuild it with "
                        f"dan.build_adjoint(arch, model=your_model)")
    if k == "registered":
        return _registered(space, args, num_classes, in_channels)
    if k == "torchvision":
        return _torchvision(space, args, num_classes, in_channels)
    if k == "timm":
        return _timm(space, args, num_classes, in_channels)
    factory = user_function(space, "model", "--model")
    try:
        params = inspect.signature(factory).parameters
        takes_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_kw = {}, False
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if key in params or takes_kw:
            args.setdefault(key, value)
    model = factory(**args)
    if not isinstance(model, nn.Module):
        raise UserError(f"model '{space}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision(space: str, args: dict, num_classes: int, in_channels: int) -> nn.Module:
    """A torchvision classification network (see the module docstring); its size is checked before it is
    allocated (:func:`check_size`)."""
    import torchvision

    name = space.split(".", 1)[1]
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"unknown torchvision model '{name}': see torchvision.models.list_models()")
    if in_channels != 3:
        raise UserError(f"torchvision.{name} takes 3 input channels, the data has {in_channels}: repeat "
                        f"grey images with {setting('data.channels=3')}")
    if args.get("weights") is not None and withholding() and _weights_withheld(name, args["weights"]):
        args.pop("weights")  # a dry run builds the same network without them (dan.downloads)
    pretrained = args.get("weights") is not None
    if not pretrained:
        args.setdefault("num_classes", num_classes)
    if name in AUX_CLASSIFIERS:
        # their auxiliary classifiers make a training-mode forward return a named tuple, which
        # the adjoint conversion refuses; a compressed network is deployed without them, as their
        # pretrained weights are evaluated (the coverage page builds them so as well)
        args.setdefault("aux_logits", False)
        if args.get("weights") is None:
            args.setdefault("init_weights", True)  # torchvision's default, said without its warning
    meta = {**args, "weights": None}  # the size counted without the weights' download
    if name in AUX_CLASSIFIERS:
        meta.setdefault("init_weights", True)
    check_size(space, args, lambda: torchvision.models.get_model(name, **meta))
    try:
        model = torchvision.models.get_model(name, **args)
    except (TypeError, ValueError, KeyError) as e:
        what = f"unknown weights {e}" if isinstance(e, KeyError) else str(e)
        raise UserError(f"torchvision.{name}: {what} (see torchvision.models.get_model_weights"
                        f"('{name}'))") from e
    except OSError as e:  # urllib's URLError: no network, or the download failed
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"torchvision.{name}: cannot download weights {args['weights']} ({first}): "
                        f"connect to the network once, or put the file in torch hub's cache "
                        f"({torch.hub.get_dir()}/checkpoints)") from e
    if pretrained and "num_classes" not in args:
        # pretrained weights come with their own classifier (ImageNet's 1000 classes): it kept
        # them, and a 10-class dataset trained and deployed a 1000-logit network without a word
        model = new_head(model, num_classes, f"torchvision.{name}")
    return model


def _timm(space: str, args: dict, num_classes: int, in_channels: int) -> nn.Module:
    """A timm network (see the module docstring); its size is checked before it is allocated
    (:func:`check_size`)."""
    try:
        import timm
    except ImportError:
        raise UserError(f"{space} needs timm: pip install 'dan[timm]' (or pip install timm)") from None
    name = space.split(".", 1)[1]
    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        raise UserError(f"unknown timm model '{name}': see timm.list_models()")
    args.setdefault("pretrained", False)
    check_size(space, args, lambda: timm.create_model(name, num_classes=num_classes, in_chans=in_channels,
                                                      **{**args, "pretrained": False}))
    try:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_channels, **args)
    except (TypeError, ValueError, RuntimeError, OSError, AssertionError) as e:
        # OSError: pretrained weights not downloadable; AssertionError: timm's checks of its arguments
        # ("BasicBlock does not support changing base width")
        raise UserError(f"{space}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def check_size(space: str, args: dict, build) -> None:
    """Refuse the network ``space`` with ``args`` when its weights alone are more than the memory
    available, counted on PyTorch's meta device before they are allocated (``build()`` builds it
    there, without pretrained weights: :func:`dan.memory.check_weights`). An audit's arch.json with
    ``"space": "torchvision.resnet50", "space_args": {"width_per_group": 2048}`` (12 G parameters)
    made tools/count.py die with bad_alloc; registered spaces were checked, torchvision's and timm's
    networks were not. Your own ``package.module:function`` is not called twice to count it."""
    from dan.memory import check_weights

    check_weights(build, f"{space}({', '.join(f'{key}={v}' for key, v in args.items())})",
                  fix="choose smaller model.args (an arch.json's space_args)")


def new_head(model: nn.Module, num_classes: int, what: str) -> nn.Module:
    """``model`` with its classifier, the last ``Linear`` (or, as SqueezeNet's, the last 1×1 conv
    when no ``Linear`` follows it), replaced by a freshly initialised one for ``num_classes``: the
    usual fine-tuning of a pretrained network on other classes."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)):
            last = (name, m)
    if last is None:
        raise UserError(f"{what}: no Linear classifier found to give {num_classes} outputs: build it with "
                        f"num_classes={num_classes} and without pretrained weights")
    name, m = last
    if (m.out_features if isinstance(m, nn.Linear) else m.out_channels) == num_classes:
        return model
    if isinstance(m, nn.Linear):
        new = nn.Linear(m.in_features, num_classes, bias=m.bias is not None)
    else:
        new = nn.Conv2d(m.in_channels, num_classes, 1, bias=m.bias is not None)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new.to(m.weight.dtype))
    return model


def check_classes(model: nn.Module, info, what: str) -> None:
    """Refuse a network whose logits do not match the data's classes (one forward on PyTorch's
    meta device, nothing allocated): ``model.args.num_classes=5`` on 10-class data ended in an
    IndexError from the loss, and 1000 logits trained on it without a word. A network that does
    not run on the meta device is left to the run's own checks."""
    from dan.cost import meta_state

    was = model.training
    try:
        with torch.no_grad():
            out = torch.func.functional_call(model.eval(), meta_state(model), (torch.empty(input_shape(info), device="meta"),))
    except Exception:  # noqa: BLE001 (not runnable on the meta device: the run says what is wrong)
        return
    finally:
        model.train(was)
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] != info.num_classes:
        raise UserError(f"{what} gives {out.shape[1]} logits and the data has {info.num_classes} classes: build it "
                        f"for {info.num_classes} (drop model.args.num_classes, or your factory's own number)")


def _registered(space: str, args: dict, num_classes: int, in_channels: int) -> nn.Module:
    """A network of the ``search_spaces`` registry; its size is checked before it is allocated."""
    from dan.memory import check_weights

    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if key in args:  # a TypeError ("got multiple values for keyword argument") before
            if args[key] != value:
                raise UserError(f"model.args.{key} is {args[key]!r} and the data gives {value}: drop "
                                f"model.args.{key} (the data sets it)")
            del args[key]

    def build():
        return search_spaces.create(space, num_classes=num_classes, in_channels=in_channels, **args)

    check_weights(build, f"{space}({', '.join(f'{key}={v}' for key, v in args.items())})")
    return build()


def build_model(cfg, info) -> nn.Module:
    """The base network of a model config (``ModelConfig``) for the data ``info``; its logits must
    match the data's classes."""
    model = create(cfg.space, cfg.args, num_classes=info.num_classes, in_channels=info.in_channels)
    check_classes(model, info, cfg.space)
    return model


def input_shape(info) -> tuple:
    """The shape of one input image (batch 1), for cost tables and export."""
    return (1, info.in_channels, info.image_size, info.image_size)
