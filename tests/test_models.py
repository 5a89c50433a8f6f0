"""Models a user brings (issue 11): by name (torchvision., timm.), by their own code
(package.module:factory, imported only when the user names it), or as a Python object."""

import json
import os

import pytest
import torch

import dan
from dan import models
from tests.helpers import assert_user_error, run_tool, tiny_config
from tests.zoo_models import ConcatResNet

TINY = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--epochs", "1", "--limit-batches",
        "2", "--batch-size", "16", "--quiet", "--no-tensorboard", "--set", "train.latency_batches=[1]",
        "--set", "search.warmup_epochs=0"]  # a 1-epoch search that searches
FACTORY = "tests.zoo_models:concat_resnet"


def test_model_names_are_classified_without_importing_anything():
    assert models.kind("resnet18_small") == "registered"
    assert models.kind("torchvision.mobilenet_v2") == "torchvision"
    assert models.kind("timm.resnet18") == "timm"
    assert models.kind("my_pkg.nets:build") == "code"
    assert models.kind(models.object_space(ConcatResNet())) == "object"
    for bad in ("my_pkg.nets:", "os.system('x'):f", "nope"):
        with pytest.raises(dan.UserError):
            models.kind(bad)


def test_a_users_factory_searches_retrains_and_extracts_from_the_command_line(tmp_path):
    s = tmp_path / "s"
    p = run_tool("search.py", *TINY, "--model", FACTORY, "--set", "model.args.width=8", "--budget-flops", "40%",
                 "--out", str(s))
    assert p.returncode == 0, p.stderr[-2000:]
    arch = json.loads((s / "arch.json").read_text())
    assert arch["space"] == FACTORY and set(arch["candidates"]) <= set(arch["widths"])
    lo, hi = (arch["budget"]["flops"] * (1 + sign * arch["budget"]["band"]) for sign in (-1, 1))
    assert lo <= arch["small"]["flops"] <= hi
    # another model named: refused, not silently replaced by the searched one
    p = run_tool("retrain.py", str(s / "arch.json"), "--model", "resnet18_small", "--out", str(tmp_path / "x"))
    assert_user_error(p, "--model resnet18_small", f"widths of {FACTORY}")
    assert not (tmp_path / "x").exists()
    # retrain names the model again: the user trusts it (an arch.json alone would not be enough)
    r = tmp_path / "r"
    p = run_tool("retrain.py", str(s / "arch.json"), "--model", FACTORY, "--epochs", "1", "--limit-batches", "2",
                 "--quiet", "--no-tensorboard", "--out", str(r))
    assert p.returncode == 0, p.stderr[-2000:]
    meta = json.loads((r / "small.json").read_text())
    assert meta["flops"] == arch["small"]["flops"] and (r / "small.pt2").exists()
    # so does counting the run's checkpoint (count.py had no way to name it)
    ckpt = str(r / "checkpoints" / "last.pt")
    assert_user_error(run_tool("count.py", ckpt), "--model " + FACTORY)
    p = run_tool("count.py", ckpt, "--model", FACTORY)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "small" in p.stdout


def test_an_arch_json_naming_a_module_the_user_did_not_allow_is_refused_without_importing_it(tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from tests.zoo_models import concat_resnet as build\n")
    s = tmp_path / "s"  # an arch.json of the factory's network (uniform widths: no training needed)
    p = run_tool("baseline.py", "uniform", *TINY, "--model", FACTORY, "--set", "model.args.width=8",
                 "--budget-flops", "40%", "--out", str(s))
    assert p.returncode == 0, p.stderr[-2000:]
    arch = json.loads((s / "arch.json").read_text())
    arch["space"] = arch["config"]["model"]["space"] = "evil_mod:build"
    (s / "arch.json").write_text(json.dumps(arch))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tmp_path)
    try:
        p = run_tool("retrain.py", str(s / "arch.json"), "--epochs", "1", "--limit-batches", "1", "--quiet",
                     "--no-tensorboard", "--out", str(tmp_path / "r"))
        assert_user_error(p, "evil_mod", "--model evil_mod:build")
        assert not marker.exists() and not (tmp_path / "r").exists()
        # named by the user: now it is imported and run
        p = run_tool("retrain.py", str(s / "arch.json"), "--model", "evil_mod:build", "--epochs", "1",
                     "--limit-batches", "1", "--quiet", "--no-tensorboard", "--out", str(tmp_path / "r2"))
        assert p.returncode == 0, p.stderr[-2000:]
        assert marker.read_text() == "ran"
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old


def test_the_python_api_searches_retrains_and_extracts_a_model_object(tmp_path):
    torch.manual_seed(0)  # the object's own initial weights (torch seeds each process at random)
    model = ConcatResNet(num_classes=4, width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = tiny_config(str(tmp_path / "unused"), **{"train.epochs": 1, "train.limit_batches": 3,
                                                  "search.warmup_epochs": 0})
    arch = dan.search(model, {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "synthetic_size": 96,
                              "batch_size": 16}, budget="40%", cfg=cfg, out=str(tmp_path / "api"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the object is untouched
    assert arch.space == "<object ConcatResNet>"
    assert os.path.isfile(tmp_path / "api" / "arch.json")
    anet = dan.build_adjoint(arch, model=model)
    # retrain with the API's pieces: a few adjoint steps, then the small network cut out
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
    opt = torch.optim.Adam(anet.parameters(), lr=1e-2)
    losses = []
    for step in range(5):
        big, small = anet(x)
        loss = dan.adjoint_loss(big, small, y, dan.schedule("quadratic")(step / 5))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    net = dan.extract_small(anet.eval())
    with torch.no_grad():
        assert torch.allclose(net(x), anet.small(x), atol=1e-5)
    cost = dan.count(net, tuple(arch.input_shape))
    assert (cost.flops, cost.params) == (arch.small["flops"], arch.small["params"])
    band = arch.budget["band"]  # the band is on both sides of the budget
    assert arch.budget["flops"] * (1 - band) <= arch.small["flops"] <= arch.budget["flops"] * (1 + band)
    with pytest.raises(dan.UserError, match="build_adjoint"):  # no name to build it from
        dan.build_adjoint(dan.load_arch(str(tmp_path / "api" / "arch.json")))
    # the data dict is a config's data section: a misspelt key is named (it was a TypeError)
    with pytest.raises(dan.UserError, match="unknown config key 'data.dta'"):
        dan.search(model, {"dataset": "synthetic", "dta": "x"}, out=str(tmp_path / "typo"))
    assert not os.path.exists(tmp_path / "typo")
    # an arch.json's path (or its folder) is taken for the Arch; a wrong argument is named, not an
    # AttributeError deep inside
    again = dan.build_adjoint(str(tmp_path / "api"), model=model)
    assert {g.name: g.width for g in again.groups} == {g.name: g.width for g in anet.groups}
    with pytest.raises(dan.UserError, match="torch.nn.Module, got a str"):
        dan.to_adjoint("resnet18", alpha=4)
    with pytest.raises(dan.UserError, match="alpha must be >= 1 .*got nan"):  # was a ValueError in ceil()
        dan.to_adjoint(model, alpha=float("nan"))


def test_the_python_api_searches_under_a_latency_budget(tmp_path, monkeypatch):
    """``dan.search(..., kind="latency")`` as ``tools/search.py --budget-latency`` (the API took only
    FLOPs and params). What the latency lands at is tested alone in tests/test_latency.py; here the
    budget reaches the search and the measurement is recorded."""
    monkeypatch.setenv("DAN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = ConcatResNet(num_classes=4, width=8)
    cfg = tiny_config(str(tmp_path / "unused"), **{"train.epochs": 1, "train.limit_batches": 2,
                                                  "search.warmup_epochs": 0})
    arch = dan.search(model, {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "synthetic_size": 64,
                              "batch_size": 16}, budget="85%", kind="latency", cfg=cfg, out=str(tmp_path / "s"))
    assert arch.budget["relative"] == 0.85 and arch.budget["latency"] > 0
    assert arch.latency["measured_ms"] > 0 and arch.latency["device"]["batch"] == 1
    # re-timed on the network object (an audit: tools/latency.py --arch said to rebuild it with
    # dan.build_adjoint, which times nothing, and remeasure took no model)
    from dan.latency import remeasure

    again = remeasure(dan.load_arch(str(tmp_path / "s" / "arch.json")), model=model)
    assert again["measured_ms"] > 0 and again["budget_ms"] > 0
    # its path, or the search's folder, as dan.build_adjoint takes them (an audit: an AttributeError)
    assert remeasure(str(tmp_path / "s"), model=model)["budget_ms"] == again["budget_ms"]
    with pytest.raises(dan.UserError, match=r"remeasure takes an Arch \(dan.load_arch\) or an arch.json path, "
                                            r"got a dict"):
        remeasure({"widths": {}}, model=model)
    assert_user_error(run_tool("latency.py", "--arch", str(tmp_path / "s" / "arch.json")),
                      "dan.latency.remeasure(dan.load_arch(path), model=your_model)")
    with pytest.raises(dan.UserError, match="'flops', 'params' or 'latency'"):
        dan.search(model, "synthetic", kind="energy", out=str(tmp_path / "e"))


def test_grey_images_feed_a_torchvision_model_and_its_search_lands_in_the_band(tmp_path):
    """Fashion-MNIST (one channel, 28x28) with torchvision's MobileNetV2: channels repeated to 3."""
    s = tmp_path / "s"
    p = run_tool("search.py", "--dataset", "fashion_mnist", "--set", "data.channels=3", "--set", "data.train_subset=600",
                 "--model", "torchvision.mobilenet_v2", "--epochs", "1", "--limit-batches", "4", "--batch-size", "32",
                 "--quiet", "--no-tensorboard", "--budget-flops", "25%", "--set", "search.warmup_epochs=0",
                 "--out", str(s))
    assert p.returncode == 0, p.stderr[-2000:]
    arch = json.loads((s / "arch.json").read_text())
    assert arch["input_shape"] == [1, 3, 28, 28] and arch["space"] == "torchvision.mobilenet_v2"
    assert abs(arch["small"]["flops"] / arch["budget"]["flops"] - 1) <= 0.03
    anet = dan.build_adjoint(dan.load_arch(str(s / "arch.json")))
    assert dan.count(dan.extract_small(anet), (1, 3, 28, 28)).flops == arch["small"]["flops"]
    # without the channel option the refusal says how
    p = run_tool("search.py", "--dataset", "fashion_mnist", "--model", "torchvision.mobilenet_v2", "--epochs", "2",
                 "--limit-batches", "1", "--quiet", "--budget-flops", "25%", "--out", str(tmp_path / "t"))
    assert_user_error(p, "data.channels=3")


def test_googlenet_and_inception_are_built_without_auxiliary_classifiers_unless_asked():
    """`--model torchvision.googlenet` converts as the coverage page says: their auxiliary
    classifiers (a named tuple out of a training-mode forward) are left out by default."""
    for name, size in (("googlenet", 64), ("inception_v3", 96)):
        net = models.create(f"torchvision.{name}", num_classes=4, in_channels=3)
        assert net.aux_logits is False
        anet = dan.to_adjoint(net, input_shape=(1, 3, size, size))
        big, small = anet.train()(torch.randn(2, 3, size, size))
        assert big.shape == small.shape == (2, 4)
    net = models.create("torchvision.googlenet", {"aux_logits": True}, num_classes=4, in_channels=3)
    assert net.aux_logits is True  # what the user asks for is kept (and refused by the conversion)
    with pytest.raises(dan.UnsupportedModelError):
        dan.to_adjoint(net, input_shape=(1, 3, 64, 64))


def test_pretrained_torchvision_weights_get_a_head_for_the_data_and_a_wrong_head_is_refused(tmp_path, monkeypatch):
    # weights=... kept ImageNet's 1000-class classifier on 10-class data (trained and deployed without
    # a word), a failed download was a urllib traceback, and num_classes=5 on 10-class data an IndexError
    import torchvision

    def offline(*args, **kwargs):  # as this machine is
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(dan.UserError, match="cannot download weights IMAGENET1K_V1 .*torch hub's cache"):
        models.create("torchvision.resnet18", {"weights": "IMAGENET1K_V1"}, num_classes=10, in_channels=3)
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18()  # stands for the downloaded file
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url",
                        lambda *a, **k: pretrained.state_dict())
    net = models.create("torchvision.resnet18", {"weights": "IMAGENET1K_V1"}, num_classes=10, in_channels=3)
    assert net.fc.out_features == 10 and torch.equal(net.conv1.weight, pretrained.conv1.weight)
    squeeze = models.new_head(torchvision.models.squeezenet1_1(), 7, "squeezenet")
    assert squeeze(torch.randn(1, 3, 64, 64)).shape == (1, 7)  # its classifier is a 1x1 conv

    info = dan.data.DatasetInfo("synthetic", 10, 3, 32, (0.5,) * 3, (0.25,) * 3)
    from dan.config import Config

    cfg = Config.from_dict({"model": {"space": "torchvision.mobilenet_v3_small", "args": {"num_classes": 5}}})
    with pytest.raises(dan.UserError, match="gives 5 logits and the data has 10 classes"):
        models.build_model(cfg.model, info)
    proc = run_tool("train.py", *TINY, "--model", "torchvision.mobilenet_v3_small", "--set", "model.args.num_classes=1000",
                    "--out", str(tmp_path / "r"))
    assert_user_error(proc, "gives 1000 logits and the data has 4 classes")
    assert not (tmp_path / "r").exists()


def test_a_registered_space_given_num_classes_or_in_channels_in_its_args_says_what_to_do(tmp_path):
    # model.args.num_classes on resnet18_small was a TypeError ("multiple values for keyword argument")
    assert models.create("resnet18_small", {"num_classes": 4, "width": 8}, num_classes=4, in_channels=3)
    with pytest.raises(dan.UserError, match="model.args.num_classes is 5 and the data gives 4: drop model.args.num_classes"):
        models.create("resnet18_small", {"num_classes": 5}, num_classes=4, in_channels=3)
    with pytest.raises(dan.UserError, match="model.args.in_channels is 1 and the data gives 3"):
        models.create("resnet18", {"in_channels": 1}, num_classes=4, in_channels=3)
    assert_user_error(run_tool("count.py", "resnet18", "--arg", "num_classes=5"), "give it as --num-classes 5")


def test_a_standard_library_function_is_refused_as_a_builder_even_when_trusted(tmp_path):
    """Audit: a config file with ``model: {space: "os:system", args: {command: "touch ..."}}`` ran the
    command, even under --dry-run: a function of Python's standard library builds no network nor dataset."""
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {{space: 'os:system', args: {{command: 'touch {marker}'}}}}\n"
                   "data: {dataset: synthetic, image_size: 16, num_classes: 4}\n")
    p = run_tool("train.py", "--config", str(bad), "--dry-run", "--out", str(tmp_path / "o"))
    assert_user_error(p, "'os:system'", "standard library (os)", "your own package.module:function")
    assert not marker.exists()
    models.trust("os.path:join", "builtins:eval", "subprocess:run")
    for name in ("os.path:join", "builtins:eval"):
        with pytest.raises(dan.UserError, match="standard library"):
            models.create(name, {}, num_classes=4, in_channels=3)
    from dan.config import DataConfig
    from dan.data.code import call_splits

    with pytest.raises(dan.UserError, match="dataset 'subprocess:run' names a function of Python's standard"):
        call_splits(DataConfig(dataset="subprocess:run", args={"args": ["touch", str(marker)]}))
    assert not marker.exists()


def test_a_runs_saved_config_yaml_given_as_config_does_not_trust_the_code_it_names(tmp_path, monkeypatch):
    """Audit: ``--config <someone's run>/config.yaml`` imported the ``model.space`` module it named, as
    the user's own config file would: a run's saved config is named again on the command line, as an
    arch.json's names are."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                          "from tests.zoo_models import concat_resnet as build\n")
    cfg = tiny_config(str(tmp_path / "run"), **{"model.space": "evil_mod:build"})
    cfg.code = "0.1.0+g0123456789ab"  # as dan.loop writes a run's config.yaml
    cfg.save(str(tmp_path / "config.yaml"))
    common = ["--config", str(tmp_path / "config.yaml"), "--dry-run", "--out", str(tmp_path / "o")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    p = run_tool("train.py", *common)
    assert_user_error(p, "evil_mod", "--model evil_mod:build", "run's saved config.yaml")
    assert not marker.exists()
    p = run_tool("train.py", *common, "--model", "evil_mod:build")  # named: imported, its args kept
    assert p.returncode == 0, p.stderr[-2000:]
    assert marker.read_text() == "ran"
    # the user's own file (no `code`, not every key of a run's) is trusted as a script is
    os.remove(marker)
    own = tmp_path / "own.yaml"
    own.write_text("model: {space: 'evil_mod:build', args: {width: 8}}\n"
                   "data: {dataset: synthetic, image_size: 16, num_classes: 4}\n")
    p = run_tool("train.py", "--config", str(own), "--dry-run", "--out", str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert marker.read_text() == "ran"
