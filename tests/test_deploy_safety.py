"""Deploy files a user may have received never run code when loaded (issue 10, point 3).

Each test crafts a ``.pt2`` whose loading through ``torch.export.load`` reaches an unpickler with a
payload that creates a marker file (``os.system``-free: ``pathlib.Path.touch`` via ``__reduce__``),
then checks that ``dan.deploy.load_deployable`` and ``tools/count.py`` refuse it with one line and
exit 2, and that the marker was never created. The second half crafts the program's JSON instead
(a symbolic size that ``sympy.sympify`` evaluates, guard code, a node target, names that torch.fx
pastes into the source it runs).
"""

import io
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys
import warnings
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
    _payload_runs_under_plain_torch(tmp_path, _craft_pickled_weight, torch.export.load,
                                    "this PyTorch no longer unpickles pickled .pt2 weights with weights_only=False")


def _payload_runs_under_plain_torch(tmp_path, craft, use, why_not: str) -> None:
    """A control: the payload ``craft`` puts in a genuine small.pt2 runs when plain PyTorch ``use``s
    the file (skipped, saying ``why_not``, when this PyTorch no longer runs it)."""
    src = _plain_pt2(tmp_path / "ok")
    bad, marker = str(tmp_path / "bad.pt2"), tmp_path / "pwned"
    craft(src, bad, marker)
    try:
        use(bad)
    except Exception:
        pass
    if not marker.exists():
        pytest.skip(why_not)


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


# --- the program's JSON (models/model.json): strings the deserializer evaluates or runs ---------
#
# An audit rewrote one symbolic size of a real small.pt2, "Symbol('s77', positive=True,
# integer=True)", as "__import__('os').system('touch ...') and 0 or Symbol(...)": torch.export's
# deserializer hands every expr_str to sympy.sympify, which evals it, and load_deployable and
# tools/count.py ran the command although the archive held only the entries a plain export writes.
# The same JSON reaches code through guards_code (exec'd by .module()), node targets (looked up from
# torch and called), and names pasted into the Python source torch.fx generates and exec's
# (placeholder names, state-dict FQNs). Each craft below creates a marker if it runs.

def _touch(marker) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _edit_program(src: str, dst: str, edit_doc, edit_weights=None) -> None:
    """Copy ``src`` to ``dst`` with ``edit_doc(doc)`` applied to the parsed models/model.json (and
    ``edit_weights(cfg)`` to the weights config)."""
    def edit(name, data):
        if name.endswith("models/model.json"):
            doc = json.loads(data)
            edit_doc(doc)
            return [(name, json.dumps(doc))]
        if edit_weights and name.endswith("_weights_config.json"):
            cfg = json.loads(data)
            edit_weights(cfg)
            return [(name, json.dumps(cfg))]
        return [(name, data)]
    _rewrite(src, dst, edit)


def _craft_expr_str(src, dst, marker):
    """The audit's PoC: the first symbolic size evaluates a payload, then the symbol it replaced."""
    def edit(doc):
        text = json.dumps(doc)
        sym = re.search(r'"expr_str": "(Symbol\(\'s\d+\'[^"]*\))"', text).group(1)
        doc.clear()
        doc.update(json.loads(text.replace(sym, f"{_touch(marker)} or {sym}", 1)))
    _edit_program(src, dst, edit)


def _craft_guards_code(src, dst, marker):
    def edit(doc):
        doc["guards_code"] = [f"{_touch(marker)} is None"]
    _edit_program(src, dst, edit)


def _craft_placeholder_name(src, dst, marker):
    """The user input renamed ``input=<payload>``: fx writes it into ``def forward(self, ...)``."""
    new = f"input={_touch(marker)}"

    def rename(v):
        if isinstance(v, dict):
            if v.get("as_tensor") == {"name": "input"}:
                v["as_tensor"] = {"name": new}
            for item in v.values():
                rename(item)
        elif isinstance(v, list):
            for item in v:
                rename(item)

    def edit(doc):
        rename(doc)
        values = doc["graph_module"]["graph"]["tensor_values"]
        values[new] = values.pop("input")
    _edit_program(src, dst, edit)


def _craft_parameter_fqn(src, dst, marker):
    """A weight's FQN that closes fx's ``getattr(self, "...")`` quote (weights config renamed too)."""
    path = repr(str(marker)).replace(".", "'+chr(46)+'")  # fx splits the FQN at dots
    new = f'w"+str(getattr(getattr(__import__("pathlib"),"Path")({path}),"touch")())+"'

    def edit(doc):
        spec = doc["graph_module"]["signature"]["input_specs"][0]["parameter"]
        spec["parameter_name"] = new

    def edit_weights(cfg):
        first = next(iter(cfg["config"]))
        cfg["config"][new] = cfg["config"].pop(first)
    _edit_program(src, dst, edit, edit_weights)


def _craft_node_target(src, dst, marker):
    """The last node calls ``torch.os.system`` (``os``, reached from ``torch``'s namespace)."""
    def edit(doc):
        node = doc["graph_module"]["graph"]["nodes"][-1]
        node["target"] = "torch.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]
    _edit_program(src, dst, edit)


JSON_CRAFTS = {"expr_str": _craft_expr_str, "guards_code": _craft_guards_code,
               "placeholder_name": _craft_placeholder_name, "parameter_fqn": _craft_parameter_fqn,
               "node_target": _craft_node_target}


@pytest.mark.parametrize("craft", ["expr_str", "guards_code", "placeholder_name", "parameter_fqn"])
def test_the_json_exploits_are_real_without_the_check(tmp_path, craft):
    """Control: plain torch.export.load(...).module() and a forward run each payload (so the
    refusals below prevent something that would otherwise happen)."""
    _payload_runs_under_plain_torch(tmp_path, JSON_CRAFTS[craft],
                                    lambda bad: torch.export.load(bad).module()(torch.randn(2, 1, 8, 8)),
                                    f"this PyTorch no longer runs a {craft} payload")


@pytest.mark.parametrize("craft", sorted(JSON_CRAFTS))
def test_a_pt2_whose_json_would_run_code_is_refused_and_runs_nothing(tmp_path, craft):
    src = _plain_pt2(tmp_path / "ok")
    bad, marker = str(tmp_path / "small.pt2"), tmp_path / "pwned"
    JSON_CRAFTS[craft](src, bad, marker)
    with pytest.raises(UserError, match="re-export the file from its run") as e:
        load_deployable(bad)
    assert "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("craft", ["expr_str", "node_target"])
def test_count_tool_refuses_a_pt2_whose_json_would_run_code_with_one_line(tmp_path, craft):
    src = _plain_pt2(tmp_path / "ok")
    bad, marker = str(tmp_path / "small.pt2"), tmp_path / "pwned"
    JSON_CRAFTS[craft](src, bad, marker)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "count.py"), bad],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "torch.export could run as code" in p.stderr
    assert not marker.exists()


class _SymbolicShapes(nn.Module):
    """A network whose export holds real symbolic expressions over the dynamic batch (Mul,
    FloorDiv, Add), not only the batch's Symbol."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        both = torch.cat([y, y], 0)
        return self.fc(y) + both[::3].sum() + both.reshape(-1).sum()


def test_a_genuine_export_with_symbolic_expressions_still_loads(tmp_path):
    save_deployable(_SymbolicShapes(), str(tmp_path), (1, 1, 8, 8))
    src = str(tmp_path / "small.pt2")
    with zipfile.ZipFile(src) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))).decode()
    assert "FloorDiv(" in text and "Mul(" in text  # (what the check must let through)
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(load_deployable(src)(x), torch.export.load(src).module()(x))


@pytest.mark.parametrize("expr", [
    "Symbol('s77', positive=True, integer=True)",
    "FloorDiv(Add(Mul(Integer(2), Symbol('s77', positive=True, integer=True)), Integer(2)), Integer(3))",
    "Max(Integer(1), Add(Symbol('s0', integer=True, positive=True), Integer(-2)))",
    "StrictLessThan(Symbol('u0', integer=True), Integer(9))",
    "Mul(Float('1.5', precision=53), Symbol('zf1', real=True))",
    "Mul(Rational(1, 2), Symbol('s1', integer=True))", "true", "2*s0 + (s1 + 1)//2", "Mod(s0, 3) <= 65536",
])
def test_symbolic_expressions_as_torch_export_writes_them_pass(expr):
    from dan.pt2_json import check_expr
    check_expr(expr)


@pytest.mark.parametrize("expr", [
    "__import__('os').system('touch m') and 0 or Symbol('s77', positive=True, integer=True)",
    "Symbol('s77').__class__", "s0.func", "eval('1')", "Symbol('os', integer=True)", "lambda: 0", "[s0][0]",
    "Symbol('s1', integer=print)", "Symbol('s77', __import__=True)", "1 if s0 else 2", "Integer(1)\nimport os",
    "Pow(Integer(2), Integer(999999999))", "PowByNatural(2, 999999999)", "2**s0", "LShift(1, 999999999)",
    "(" * 100 + "s0" + ")" * 100, "s0" + " + 1" * 10000, "1..__class__", "S.Zero",
])
def test_other_strings_where_torch_export_writes_expressions_are_refused(expr):
    from dan.pt2_json import _Refuse, check_expr
    with pytest.raises(_Refuse):
        check_expr(expr)


def test_a_pt2_holding_its_program_twice_is_refused(tmp_path):
    """A zip may hold one name twice, and the checker and torch's reader need not read the same copy:
    such an archive is refused whole (the crafted copy first, the genuine one second)."""
    src = _plain_pt2(tmp_path / "ok")
    crafted, bad, marker = str(tmp_path / "crafted.pt2"), str(tmp_path / "small.pt2"), tmp_path / "pwned"
    _craft_expr_str(src, crafted, marker)
    with zipfile.ZipFile(crafted) as z:
        program = next(n for n in z.namelist() if n.endswith("models/model.json"))
        evil = z.read(program)

    def edit(name, data):
        return [(name, evil), (name, data)] if name == program else [(name, data)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        _rewrite(src, bad, edit)
    with pytest.raises(UserError, match="an entry twice"):
        load_deployable(bad)
    assert not marker.exists()
