"""The tuning file (``configs/tune_*.yaml``): which config keys a study samples, over which ranges,
and the study's settings; parsed into a :class:`TuneSpec` and checked before any trial runs."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from dan.config import Config, int_range, load_yaml_file, num_range, takes_text
from dan.errors import UserError

_TYPES = ("float", "int", "categorical")


@dataclass
class TuneSpec:
    params: dict  # config key -> {type: float|int|categorical, low, high, log, step, choices}
    objectives: list = field(default_factory=lambda: ["accuracy"])  # accuracy [, flops]
    sampler: str = "tpe"  # tpe | nsga2 | random
    pruner: str = "median"  # median | hyperband | none
    search_epochs: int = 2
    retrain_epochs: int = 2
    train_subset: int | None = None
    validation: float = 0.1  # part of the training split the retrain is validated on
    seed: int = 0
    heartbeat: int = 30  # seconds between heartbeats of a running trial (SQL storages)
    grace: int = 120  # a running trial without a heartbeat for this long is dead
    max_retry: int = 3  # times a dead worker's trial is run again

    @property
    def multi(self) -> bool:
        """Accuracy and FLOPs (NSGA-II), not accuracy alone."""
        return len(self.objectives) > 1

    def key(self) -> str:
        """What a study stores to refuse another tuning file: everything but the settings of the
        dead-worker detection (they may change between runs)."""
        d = dict(self.__dict__)
        for k in ("heartbeat", "grace", "max_retry"):
            d.pop(k)
        return json.dumps(d, sort_keys=True)


def load_spec(path: str) -> TuneSpec:
    """The tuning file at ``path``, checked (:func:`spec_from_dict`)."""
    if os.path.isdir(path):  # was "tuning file runs/t does not exist"
        raise UserError(f"tuning file {path} is a directory: pass the YAML file itself (configs/tune_*.yaml)")
    if not os.path.isfile(path):
        raise UserError(f"tuning file {path} does not exist: pass configs/tune_*.yaml")
    d = load_yaml_file(path, "tuning file", _choice_text) or {}
    spec = spec_from_dict(d, path)
    # the user's own file, named on the command line as a --config is: the models and datasets its
    # choices name may import their code (dan.models: trust)
    from dan import models

    for key in ("model.space", "data.dataset"):
        r = spec.params.get(key)
        if isinstance(r, dict) and r.get("type") == "categorical":
            models.trust(*r.get("choices", []))
    return spec


def _choice_text(path: tuple) -> bool:
    """Whether the tuning file's value at ``path`` is a choice of a config key that holds a string
    (``params: {train.amp: {choices: [auto, off]}}``): there YAML's plain ``off`` is "off", not
    False, which the config refused (dan.yaml_data)."""
    return len(path) == 4 and path[0] == "params" and path[2] == "choices" and isinstance(path[1], str) and \
        takes_text(path[1])


def spec_from_dict(d: dict, where: str = "tuning file") -> TuneSpec:
    """A :class:`TuneSpec` from a mapping; a :class:`UserError` names the first bad entry."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: must hold a mapping at the top level")
    known = set(TuneSpec.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown and unknown[0] in Config.__dataclass_fields__:  # an experiment config passed as the tuning file
        raise UserError(f"{where}: unknown key '{unknown[0]}', a config's: this is an experiment config; pass it "
                        f"with --config, and a tuning file (configs/tune_*.yaml) with --tune")
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    if not isinstance(d.get("params"), dict) or not d["params"]:
        raise UserError(f"{where}: 'params' must map config keys to ranges")
    for key, r in d["params"].items():
        _check_param(key, r, where)
    spec = TuneSpec(**d)
    if spec.objectives not in (["accuracy"], ["accuracy", "flops"], ["flops", "accuracy"]):
        raise UserError(f"{where}: objectives must be [accuracy] or [accuracy, flops], got {spec.objectives!r}")
    # the study's own settings, checked here and not by the first trial, which would stop the study
    # after building it (search_epochs: 'abc' and validation: 2 were taken)
    for name, lo, hi in (("search_epochs", 1, 100_000), ("retrain_epochs", 1, 100_000), ("seed", 0, 2**32 - 1),
                         ("heartbeat", 1, 10**6), ("grace", 1, 10**6), ("max_retry", 0, 1000)):  # s, s, retries
        int_range(name, getattr(spec, name), lo, hi, label=f"{where}: {name}")
    if spec.train_subset is not None:
        int_range("train_subset", spec.train_subset, 1, 10**9, label=f"{where}: train_subset")
    # the part of the training split each trial is scored on (never the test split: not 0)
    num_range("validation", spec.validation, 0, 1, lo_open=True, hi_open=True, label=f"{where}: validation")
    if spec.sampler not in ("tpe", "nsga2", "random") or spec.pruner not in ("median", "hyperband", "none"):
        raise UserError(f"{where}: sampler is tpe|nsga2|random, pruner is median|hyperband|none")
    return spec


_FIELDS = {"categorical": ("type", "choices"), "float": ("type", "low", "high", "log", "step"),
           "int": ("type", "low", "high", "log", "step")}


_SET_BY_TRIALS = ("train.epochs",)


def _check_param(key: str, r, where: str) -> None:
    """One entry of ``params``: a known config key and a range every value of which it accepts."""
    if key in _SET_BY_TRIALS:  # each trial sets it from the tuning file: a sampled value was dropped
        raise UserError(f"{where}: params.{key}: a trial's epochs are the tuning file's search_epochs and "
                        f"retrain_epochs; tune those instead")
    if not isinstance(r, dict) or r.get("type") not in _TYPES:
        raise UserError(f"{where}: params.{key} needs type: float, int or categorical")
    extra = sorted(set(r) - set(_FIELDS[r["type"]]), key=str)
    if extra:
        raise UserError(f"{where}: params.{key}: unknown field '{extra[0]}' ({', '.join(_FIELDS[r['type']])})")
    if r["type"] == "categorical":
        choices = r.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: params.{key} needs choices: a list of values")
        for c in choices:  # every choice, not the first only: a bad one would stop the study when drawn
            _check_value(key, c, f"{where}: params.{key} choice {c!r}")
        return
    lo, hi = r.get("low"), r.get("high")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi))
    if not numeric or lo > hi:
        raise UserError(f"{where}: params.{key} needs finite numbers low <= high, got {lo!r}, {hi!r}")
    if r["type"] == "int" and not all(isinstance(v, int) for v in (lo, hi)):
        raise UserError(f"{where}: params.{key} is an int range: low and high must be integers")
    if r.get("log") and lo <= 0:
        raise UserError(f"{where}: params.{key} has log: true, so low must be > 0, got {lo!r}")
    step = r.get("step")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0):
        raise UserError(f"{where}: params.{key}: step must be a positive number, got {step!r}")
    if step is not None and r.get("log"):
        raise UserError(f"{where}: params.{key}: a range is either log: true or has a step, not both")
    for v in (lo, hi):  # every value of the range must be valid for the key
        _check_value(key, v, f"{where}: params.{key} range [{lo}, {hi}]")


def _check_value(key: str, value, what: str) -> None:
    """``value`` set at the config key ``key`` of a default config that then validates; else a
    :class:`UserError` that starts with ``what`` (an unknown key, a value of the wrong type or range)."""
    try:
        cfg = Config()
        cfg.set(key, value)
        cfg.validate()
    except UserError as e:
        raise UserError(f"{what}: {e}") from e
