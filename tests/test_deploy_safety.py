"""Deploy files a user may have received never run code when loaded (issue 10, point 3).

Each test crafts a ``.pt2`` whose loading through ``torch.export.load`` reaches an unpickler with a
payload that creates a marker file (``os.system``-free: ``pathlib.Path.touch`` via ``__reduce__``),
then checks that ``dan.deploy.load_deployable`` and ``tools/count.py`` refuse it with one line and
exit 2, and that the marker was never created.
"""

import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch
import torch.nn as nn

from dan.deploy import load_deployable, save_deployable
from dan.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _plain_pt2(folder) -> str:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    save_deployable(net, str(folder), (1, 1, 8, 8))
    return os.path.join(str(folder), "small.pt2")


def _rewrite(src: str, dst: str, edit) -> None:
    """Copy the zip ``src`` to ``dst``, passing each (name, bytes) through ``edit`` (which returns
    a list of (name, bytes) to write)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for name, data in edit(info.filename, zin.read(info.filename)):
                zout.writestr(name, data)


def _pickled_weight(marker):
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _craft_pickled_weight(src, dst, marker):
    def edit(name, data):
        if name.endswith("_weights_config.json"):
            cfg = json.loads(data)
            first = next(iter(cfg["config"].values()))
            first["use_pickle"] = True
            return [(name, json.dumps(cfg))]
        if name.endswith("data/weights/weight_0"):
            return [(name, _pickled_weight(marker))]
        return [(name, data)]
    _rewrite(src, dst, edit)


def _craft_opaque_constant(src, dst, marker):
    def edit(name, data):
        if name.endswith("_constants_config.json"):
            cfg = json.loads(data)
            cfg["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False}
            root = name.split("/", 1)[0]
            return [(name, json.dumps(cfg)), (f"{root}/data/constants/opaque_obj_0", pickle.dumps(_Payload(marker)))]
        return [(name, data)]
    _rewrite(src, dst, edit)


def _craft_sample_inputs(src, dst, marker):
    def edit(name, data):
        if name.endswith("data/sample_inputs/model.pt"):
            return [(name, _pickled_weight(marker))]
        return [(name, data)]
    _rewrite(src, dst, edit)


def _craft_legacy(src, dst, marker):
    """The pre-2.7 layout, whose loader retries torch.load with weights_only=False."""
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("version", "8.0")
        z.writestr("serialized_exported_program.json", "{}")
        z.writestr("serialized_state_dict.pt", _pickled_weight(marker))
        z.writestr("serialized_constants.pt", b"")
        z.writestr("serialized_example_inputs.pt", b"")


def _craft_aoti(src, dst, marker):
    def edit(name, data):
        out = [(name, data)]
        if name.endswith("archive_version"):
            root = name.split("/", 1)[0]
            out.append((f"{root}/data/aotinductor/model/model.so", b"\x7fELF not really"))
        return out
    _rewrite(src, dst, edit)


CRAFTS = {"pickled_weight": _craft_pickled_weight, "opaque_constant": _craft_opaque_constant,
          "sample_inputs": _craft_sample_inputs, "legacy_layout": _craft_legacy, "aoti_library": _craft_aoti}


def test_the_exploit_is_real_without_the_guard(tmp_path):
    """Control: plain torch.export.load runs the payload of a pickled weight (so the tests below
    check something that would otherwise happen)."""
    src = _plain_pt2(tmp_path / "ok")
    bad, marker = str(tmp_path / "bad.pt2"), tmp_path / "pwned"
    _craft_pickled_weight(src, bad, marker)
    try:
        torch.export.load(bad)
    except Exception:
        pass
    if not marker.exists():
        pytest.skip("this PyTorch no longer unpickles pickled .pt2 weights with weights_only=False")
    assert marker.exists()


@pytest.mark.parametrize("craft", sorted(CRAFTS))
def test_crafted_pt2_is_refused_and_runs_nothing(tmp_path, craft):
    src = _plain_pt2(tmp_path / "ok")
    bad, marker = str(tmp_path / "small.pt2"), tmp_path / "pwned"
    CRAFTS[craft](src, bad, marker)
    with pytest.raises(UserError):
        load_deployable(bad)
    assert not marker.exists()


def test_count_tool_refuses_a_crafted_pt2_with_one_line(tmp_path):
    src = _plain_pt2(tmp_path / "ok")
    bad, marker = str(tmp_path / "small.pt2"), tmp_path / "pwned"
    _craft_pickled_weight(src, bad, marker)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "count.py"), bad],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not marker.exists()


def test_a_plain_pt2_still_loads_and_matches(tmp_path):
    src = _plain_pt2(tmp_path)
    net = load_deployable(src)
    x = torch.randn(3, 1, 8, 8)
    ref = torch.export.load(src).module()
    assert torch.allclose(net(x), ref(x))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_truncated_or_foreign_pt2_is_one_line(tmp_path, content):
    path = tmp_path / "small.pt2"
    path.write_bytes(content)
    with pytest.raises(UserError):
        load_deployable(str(path))


def test_truncated_real_pt2_is_a_user_error(tmp_path):
    src = _plain_pt2(tmp_path)
    data = open(src, "rb").read()
    with open(src, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(UserError):
        load_deployable(src)
