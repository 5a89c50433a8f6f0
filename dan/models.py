"""Building the base network of a config: by name, by the user's code, or as an object.

``model.space`` (``--model`` / ``--space`` on the command line) names the network:

* a search space of the ``search_spaces`` registry (``resnet18_small``, ``resnet50``...);
* ``torchvision.<name>``: any torchvision classification builder (``model.args`` are passed on,
  e.g. ``weights: IMAGENET1K_V2``; GoogLeNet and Inception v3 without their auxiliary classifiers
  unless ``aux_logits: true``, which the conversion refuses);
* ``timm.<name>``: a timm model (the optional extra ``pip install 'dan[timm]'``), built with
  ``pretrained=False`` unless ``model.args`` says ``pretrained: true``;
* ``package.module:factory``: the user's own builder. It is called with ``model.args`` plus
  ``num_classes`` and ``in_channels`` when its signature takes them.

**Trust.** ``package.module:factory`` imports and runs code. It is imported only if the user named
it: on the command line (``--model``, ``--set model.space=...``), in their own ``--config`` file,
or from Python with :func:`trust`. A name read from an ``arch.json`` (or from the config stored
inside one) is not trusted by being there, so an ``arch.json`` from elsewhere stays data: building
it is refused with a message that says how to allow the name. Registered spaces, torchvision and
timm names import nothing but those packages.
"""

from __future__ import annotations

import importlib
import inspect
import re

import torch.nn as nn

import search_spaces
from dan.errors import UserError

# torchvision models built without their auxiliary classifiers unless model.args says otherwise
AUX_CLASSIFIERS = ("googlenet", "inception_v3")

_CODE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
_TIMM = re.compile(r"timm\.[\w.\-]+")
_TRUSTED: set[str] = set()


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
    typed). The command-line tools call it for ``--model``, ``--set model.space`` and ``--config``."""
    _TRUSTED.update(n for n in names if isinstance(n, str) and ":" in n)


def user_function(name: str, what: str, flag: str):
    """The function a ``package.module:function`` name points to (a ``what``: "model" or "dataset"),
    imported only if the user trusted the name (:func:`trust`; ``flag`` is the option that names it)."""
    if name not in _TRUSTED:
        raise UserError(f"{what} '{name}' would import and run the module {name.split(':')[0]}, which you did not "
                        f"name: pass {flag} {name} (or put it in your --config) if you trust it")
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


def create(space: str, args: dict | None = None, *, num_classes: int, in_channels: int) -> nn.Module:
    """The network ``space`` names (see the module docstring), for ``num_classes`` classes and
    ``in_channels`` input channels."""
    args = dict(args or {})
    k = kind(space)
    if k == "object":
        raise UserError(f"this network was searched as a Python object ({space[8:-1]}): rebuild it with "
                        f"dan.build_adjoint(arch, model=your_model)")
    if k == "registered":
        from dan.memory import check_weights

        def build():
            return search_spaces.create(space, num_classes=num_classes, in_channels=in_channels, **args)

        check_weights(build, f"{space}({', '.join(f'{key}={v}' for key, v in args.items())})")
        return build()
    if k == "torchvision":
        import torchvision

        name = space.split(".", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise UserError(f"unknown torchvision model '{name}': see torchvision.models.list_models()")
        if in_channels != 3:
            raise UserError(f"torchvision.{name} takes 3 input channels, the data has {in_channels}: repeat "
                            f"grey images with --set data.channels=3")
        if args.get("weights") is None:
            args.setdefault("num_classes", num_classes)
        if name in AUX_CLASSIFIERS:
            # their auxiliary classifiers make a training-mode forward return a named tuple, which
            # the adjoint conversion refuses; a compressed network is deployed without them, as their
            # pretrained weights are evaluated (the coverage page builds them so as well)
            args.setdefault("aux_logits", False)
            if args.get("weights") is None:
                args.setdefault("init_weights", True)  # torchvision's default, said without its warning
        try:
            return torchvision.models.get_model(name, **args)
        except (TypeError, ValueError, KeyError) as e:
            what = f"unknown weights {e}" if isinstance(e, KeyError) else str(e)
            raise UserError(f"torchvision.{name}: {what} (see torchvision.models.get_model_weights"
                            f"('{name}'))") from e
    if k == "timm":
        try:
            import timm
        except ImportError:
            raise UserError(f"{space} needs timm: pip install 'dan[timm]' (or pip install timm)") from None
        name = space.split(".", 1)[1]
        if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
            raise UserError(f"unknown timm model '{name}': see timm.list_models()")
        args.setdefault("pretrained", False)
        try:
            return timm.create_model(name, num_classes=num_classes, in_chans=in_channels, **args)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{space}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
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


def build_model(cfg, info) -> nn.Module:
    """The base network of a model config (``ModelConfig``) for the data ``info``."""
    return create(cfg.space, cfg.args, num_classes=info.num_classes, in_channels=info.in_channels)


def input_shape(info) -> tuple:
    """The shape of one input image (batch 1), for cost tables and export."""
    return (1, info.in_channels, info.image_size, info.image_size)
