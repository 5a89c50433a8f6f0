"""What the JSON of a ``.pt2`` archive may say before ``torch.export.load`` reads it.

``torch.export``'s deserializer turns several strings of ``models/<name>.json`` into code or live
objects (torch/_export/serde/serialize.py, torch/export/_unlift.py, torch/fx/graph.py):

* every ``expr_str`` (symbolic sizes, strides, symbolic int/float/bool values) goes to
  ``sympy.sympify``, which runs ``eval``: an audit's ``__import__('os').system(...) and 0 or
  Symbol(...)`` ran its command when ``load_deployable`` (and ``tools/count.py``) read the file;
* ``guards_code`` is pasted into a function that ``.module()`` runs through ``exec``;
* a node's ``target`` (and an ``as_operator`` argument, a ``source_fn_stack`` entry) is resolved by
  attribute lookups from ``torch``, ``_operator`` or ``math``, and the graph calls what it finds;
* node, placeholder and output names, the state dict's FQNs and the keys of a dict input are
  written into the Python source that ``torch.fx`` generates for the graph and ``exec``'s (a
  placeholder named ``x=__import__('os').system(...)`` ran its command too);
* a string constant input is quoted into that guard function (``x == '<value>'``).

:func:`check_pt2_json` therefore accepts only what ``torch.export.save`` writes for a plain
network, and refuses anything else before the deserializer sees it:

* ``expr_str``: sympy's ``srepr`` (what the serializer writes) or its infix form: the functions
  in :data:`EXPR_FUNCTIONS` applied to integers, symbols ``s<digits>`` (``u``, ``zf``, ``zuf``
  too), ``Symbol('s<digits>', <assumption>=True|False, ...)``, ``Float('<decimal>', precision=N)``,
  ``+ - * / // %``, comparisons and parentheses; no attribute access, no other name, no power or
  shift (a ``Pow(2, 10**9)`` would hang the load); at most :data:`MAX_EXPR_CHARS` characters;
* ``range_constraints``: symbol names to integer (or null) bounds;
* node targets and operator arguments: ``torch.ops.aten.<op>.<overload>`` (not ``save`` or
  ``from_file``, which write and read files) and the symbolic-int operators of
  :data:`SYM_OP_TARGETS`;
* ``guards_code``: empty (``torch.export`` writes none for a network with a dynamic batch);
* names (``name``, ``as_name``, the keys of ``tensor_values``..., ``forward_arg_names``): Python
  identifiers; treespec contexts and every other string: letters, digits, ``_ . + -``;
* string constants (``as_string``): printable ASCII without quotes or backslashes;
* free text that nothing evaluates: a node's ``stack_trace``, ``nn_module_stack``, ``torch_fn``,
  ``from_node`` and ``custom`` metadata.
"""

from __future__ import annotations

import json
import re

from dan.errors import UserError

SYMBOL = re.compile(r"(?:s|u|zf|zuf)\d{1,9}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLAIN = re.compile(r"[A-Za-z0-9_.+-]*")  # quote-, space- and bracket-free: safe wherever torch pastes it
STRING_CONSTANT = re.compile(r"[ !#-&(-\[\]-~]*")  # printable ASCII but ' " and \
OP_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z_][A-Za-z0-9_]*")
DOTTED = re.compile(r"(?!.*__)[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_EXPR_CHARS = 20000

# aten operators that touch files rather than tensors
FILE_OPS = frozenset({"save", "from_file"})
# how the serializer spells torch/_export/serde/serialize.py's _SYM_OPS (module.name)
SYM_OP_TARGETS = frozenset(
    [f"_operator.{op}" for op in ("eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub",
                                  "floordiv", "mod", "pow", "truediv", "and_", "or_", "lshift", "rshift")]
    + ["math.trunc"] + [f"torch.sym_{op}" for op in ("not", "int", "float", "ite", "max", "min", "sqrt")])
# sympy's srepr names and the torch.utils._sympy.functions the deserializer hands sympify, without
# the powers and shifts (PowByNatural, FloatPow, LShift, RShift, Pow), whose huge results hang a load
EXPR_FUNCTIONS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Max", "Min", "Abs", "Mod", "floor", "ceiling",
    "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "ExprCondPair",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity"})
EXPR_CONSTANTS = frozenset({"true", "false", "oo", "zoo", "nan"})
ASSUMPTIONS = frozenset({
    "integer", "positive", "negative", "nonnegative", "nonpositive", "nonzero", "zero", "real", "finite",
    "infinite", "rational", "irrational", "even", "odd", "prime", "composite", "commutative", "complex",
    "extended_real", "extended_positive", "extended_negative", "extended_nonnegative",
    "extended_nonpositive", "extended_nonzero", "hermitian", "antihermitian", "imaginary", "algebraic",
    "transcendental", "noninteger"})
_EXPR_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                         r"|(?P<str>'[^'\\]*')|(?P<op>//|<=|>=|==|!=|[-+*/%(),=<>]))\s*", re.ASCII)
_DECIMAL = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")

# node metadata that the deserializer stores as text (or parses as JSON data) and never evaluates
FREE_METADATA = frozenset({"stack_trace", "nn_module_stack", "torch_fn", "from_node", "custom"})
# keys whose string values are names pasted into generated Python
NAME_KEYS = frozenset({"name", "as_name", "forward_arg_names"})
# dicts whose keys are such names
NAMED_DICTS = frozenset({"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values",
                         "custom_obj_values"})


class _Refuse(Exception):
    """A value that fails its rule: ``what`` says which rule."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def check_pt2_json(path: str, rel: str, doc) -> None:
    """Refuse (:class:`UserError`) the parsed JSON ``doc`` of entry ``rel`` of the archive ``path``
    unless every string in it passes its rule (module docstring)."""
    where: list = []
    try:
        _value(doc, None, where)
    except _Refuse as e:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".")
        raise UserError(f"{path}: {rel} {field or '(top level)'} holds {e.what}, which torch.export could run "
                        f"as code when loading; refused (re-export the file from its run with dan, or load "
                        f"only files you trust)") from None


def _value(v, key, where: list) -> None:
    """Check ``v``, found under dict key ``key`` (None: the top level or a list's item)."""
    if isinstance(v, dict):
        _dict(v, key, where)
    elif isinstance(v, list):
        for i, item in enumerate(v):
            where.append(i)
            _value(item, key, where)
            where.pop()
    elif isinstance(v, str):
        _string(v, key)


def _dict(d: dict, key, where: list) -> None:
    if key == "range_constraints":
        return _range_constraints(d, where)
    for k, item in d.items():
        if key in NAMED_DICTS:
            _name(k)
        elif not PLAIN.fullmatch(k):
            raise _Refuse(f"the key {_shown(k)}")
        where.append(k)
        if key == "metadata":
            _metadata(k, item)
        elif k in ("target", "as_operator"):  # (only a node has a target)
            _target(item)
        elif k == "expr_str":  # (a string: sympify would evaluate a list's or a dict's strings too)
            check_expr(item)
        elif k == "guards_code" and item != []:
            raise _Refuse("guard code (torch.export writes none for a network)")
        else:
            _value(item, k, where)
        where.pop()


def _string(s: str, key) -> None:
    if key in ("as_string", "as_strings"):
        if not STRING_CONSTANT.fullmatch(s):
            raise _Refuse(f"the string constant {_shown(s)}")
    elif key in NAME_KEYS:
        _name(s)
    elif key in ("in_spec", "out_spec"):
        _treespec(s)
    elif key == "torch_version":
        if not STRING_CONSTANT.fullmatch(s) or len(s) > 100:
            raise _Refuse(f"the version {_shown(s)}")
    elif not PLAIN.fullmatch(s):
        raise _Refuse(f"{_shown(s)}")


def _name(s) -> None:
    if not isinstance(s, str) or not IDENTIFIER.fullmatch(s):
        raise _Refuse(f"the name {_shown(s)} (not a Python identifier)")


def _target(s) -> None:
    """A node's operator: an aten operator but those that touch files, or a symbolic-int one."""
    if not isinstance(s, str):
        raise _Refuse(f"the operator {_shown(s)}")
    m = OP_TARGET.fullmatch(s)
    if not (m and m.group(1) not in FILE_OPS or s in SYM_OP_TARGETS):
        raise _Refuse(f"the operator {_shown(s)} (only torch.ops.aten operators are loaded)")


def _metadata(k: str, v) -> None:
    if not isinstance(v, str):
        raise _Refuse(f"the metadata {_shown(v)}")
    if k in FREE_METADATA:
        return
    if k == "source_fn_stack":  # "name,target;name,target": targets are looked up from torch
        for item in v.split(";"):
            name, _, target = item.partition(",")
            if not IDENTIFIER.fullmatch(name) or not DOTTED.fullmatch(target):
                raise _Refuse(f"the source function {_shown(item)}")
    elif not PLAIN.fullmatch(v):
        raise _Refuse(f"the metadata {_shown(v)}")


def _range_constraints(d: dict, where: list) -> None:
    for k, bounds in d.items():
        if not SYMBOL.fullmatch(k):
            raise _Refuse(f"the symbol {_shown(k)}")
        where.append(k)
        if not isinstance(bounds, dict) or any(
                b not in ("min_val", "max_val") or not (v is None or type(v) is int) for b, v in bounds.items()):
            raise _Refuse(f"the bounds {_shown(bounds)} (integers or null)")
        where.pop()


def _treespec(s: str) -> None:
    """A pytree spec (JSON whose nodes' ``context`` is JSON again): only plain strings and numbers,
    so that a dict input's keys (pasted into the generated forward) are plain."""
    def walk(v, nested: bool) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                if not PLAIN.fullmatch(k):
                    raise _Refuse(f"the input structure key {_shown(k)}")
                if k == "context" and isinstance(item, str) and not nested:
                    walk(_json(item), True)
                else:
                    walk(item, nested)
        elif isinstance(v, list):
            for item in v:
                walk(item, nested)
        elif isinstance(v, str) and not PLAIN.fullmatch(v):
            raise _Refuse(f"the input structure entry {_shown(v)}")
    walk(_json(s), False)


def _json(s: str):
    try:
        return json.loads(s)
    except ValueError:
        raise _Refuse(f"the input structure {_shown(s)} (not JSON)") from None


def check_expr(s) -> None:
    """Raise :class:`_Refuse` unless ``s`` is a symbolic expression as torch.export writes it."""
    if not isinstance(s, str) or len(s) > MAX_EXPR_CHARS:
        raise _Refuse(f"the expression {_shown(s)}")
    tokens, pos = [], 0
    while pos < len(s):
        m = _EXPR_TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise _Refuse(f"the expression {_shown(s)}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    depth = 0
    for i, (kind, text) in enumerate(tokens):
        before = tokens[i - 1][1] if i else ""
        after_kind, after = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        depth += (text == "(") - (text == ")") if kind == "op" else 0
        adjacent = kind != "op" and after_kind not in ("op", "")  # 2s0, s0 s1: not an expression
        if depth < 0 or depth > 64 or adjacent or not _expr_token_ok(kind, text, before, after, tokens[:i]):
            raise _Refuse(f"the expression {_shown(s)}")
    if depth:
        raise _Refuse(f"the expression {_shown(s)}")


def _expr_token_ok(kind: str, text: str, before: str, after: str, previous: list) -> bool:
    if kind == "num":
        return len(text) <= 40
    if kind == "op":
        if text == "=":
            return before in ASSUMPTIONS or before == "precision"
        return not (text == "*" and before == "*")  # no power (**)
    if kind == "str":  # Symbol('s77', ...) or Float('1.5', precision=53)
        called = previous[-2][1] if len(previous) >= 2 and before == "(" else ""
        return (called == "Symbol" and bool(SYMBOL.fullmatch(text[1:-1]))) or \
            (called == "Float" and bool(_DECIMAL.fullmatch(text[1:-1])))
    if text in EXPR_FUNCTIONS:
        return after == "("
    if text in ASSUMPTIONS or text == "precision":
        return before == "," and after == "="
    if text in ("True", "False"):
        return before == "="
    return text in EXPR_CONSTANTS or bool(SYMBOL.fullmatch(text))


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."
