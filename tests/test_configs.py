"""Every shipped config loads, and its network converts (cheap: no training, no data)."""

import glob
import os

import pytest

import dan
from dan.config import Config
from dan.data import dataset_info
from dan.models import build_model
from tests.helpers import ROOT

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))
                 if not os.path.basename(p).startswith("tune_"))
TUNE_SPECS = sorted(glob.glob(os.path.join(ROOT, "configs", "tune_*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_loads_and_model_converts(path):
    cfg = Config.from_file(path)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]
    if cfg.data.dataset == "imagefolder":  # the class count comes from the folder: stand in
        cfg.data.dataset, cfg.data.num_classes, cfg.data.data = "synthetic", 1000, None  # synthetic reads no folder
    if cfg.data.dataset in ("cifar10", "cifar100"):
        cfg.data.data = "/nonexistent"  # dataset_info must not need the files
    info = dataset_info(cfg.data)
    model = build_model(cfg.model, info)
    a = cfg.adjoint
    anet = dan.to_adjoint(model, alpha=a.alpha, beta=a.beta, unmasked=tuple(a.unmasked),
                          input_shape=(1, info.in_channels, info.image_size, info.image_size))
    assert anet.searchable_groups()


@pytest.mark.parametrize("path", TUNE_SPECS, ids=[os.path.basename(p) for p in TUNE_SPECS])
def test_tuning_files_load(path):
    from dan.tune import load_spec

    spec = load_spec(path)
    assert spec.params and spec.search_epochs >= 1


def test_paths_from_python_are_kept_as_strings(tmp_path):
    # dan.search(..., out=pathlib.Path(...)) failed saving config.yaml (a YAML RepresenterError), its
    # folder left behind
    import pathlib

    import yaml

    cfg = Config.from_dict({"data": {"dataset": "synthetic"}})
    cfg.out, cfg.data.data = tmp_path / "run", pathlib.Path("~/pets")
    cfg.validate()
    assert cfg.out == str(tmp_path / "run") and cfg.data.data == "~/pets"
    cfg.save(str(tmp_path / "config.yaml"))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["out"] == str(tmp_path / "run")


def test_a_tune_section_in_a_run_config_is_refused():
    # an audit: `tune: {foo: 1}` (or --set tune.x=1) was taken by every tool, and nothing reads it
    from dan.config import Config

    assert Config.from_dict({"tune": {}}).validate().tune == {}  # as every saved config.yaml holds it
    with pytest.raises(dan.UserError, match=r"config section 'tune' \(foo\) is read by nothing: .*--tune FILE"):
        Config.from_dict({"tune": {"foo": 1}}).validate()
