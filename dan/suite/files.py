"""Reading the files of run and suite folders that the runner and the pages read (``summary.json``,
``arch.json``, ``init_from.json``, ``metrics.jsonl``, ``suite_time.json``, ``suite_elapsed.json``)
and checking the fields they use: a truncated or hand-edited file is one line that names it and
says what to do (it was a traceback: ``json.decoder.JSONDecodeError``, ``KeyError: 'networks'``,
``TypeError`` deep in a table), not a page computed from a wrong number.
"""

from __future__ import annotations

import os

from dan.arch import read_json
from dan.errors import UserError


def run_file_fix(folder: str) -> str:
    """What to do about a run folder's unreadable file: the suite makes a run whose folder is gone again."""
    return f"move the run folder {folder} away (the suite makes its run again) or restore the file"


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_summary(folder: str) -> dict | None:
    """A run's ``summary.json`` (None when it has none), with an object ``networks`` of networks."""
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        return None
    fix = run_file_fix(folder)
    s = read_json(path, fix)
    nets = s.get("networks") if isinstance(s, dict) else None
    if not isinstance(nets, dict) or not nets or not all(isinstance(n, dict) for n in nets.values()):
        raise UserError(f"{path} has no object 'networks' of networks: {fix}")
    if not isinstance(s.get("method", ""), str):
        raise UserError(f"{path}: 'method' is not a name: {fix}")
    return s


def network(summary: dict, folder: str, name: str, numbers: tuple = ("top1", "flops", "params"),
            latency: bool = False, optional: tuple = ()) -> dict:
    """The network ``name`` of a run's summary, its fields ``numbers`` checked to be numbers, those in
    ``optional`` to be numbers or none, and its ``latency_ms`` (required when ``latency``) an object
    of numbers."""
    path, fix = os.path.join(folder, "summary.json"), run_file_fix(folder)
    net = summary["networks"].get(name)
    if net is None:
        raise UserError(f"{path} has no network '{name}': {fix}")
    bad = next((k for k in numbers if not is_number(net.get(k))), None)
    bad = bad or next((k for k in optional if net.get(k) is not None and not is_number(net[k])), None)
    if bad:
        raise UserError(f"{path}: 'networks.{name}.{bad}' is not a number: {fix}")
    lat = net.get("latency_ms")
    if (latency or lat is not None) and not latencies(lat):
        raise UserError(f"{path}: 'networks.{name}.latency_ms' is not an object of numbers: {fix}")
    return net


def latencies(lat) -> bool:
    """Whether ``lat`` is a network's ``latency_ms``: an object of numbers (or none, untimed) by batch."""
    return isinstance(lat, dict) and all(v is None or is_number(v) for v in lat.values())


def arch_problem(arch, prefix: str = "") -> str | None:
    """What is wrong, for the pages, with an arch.json or a ledger's trimmed copy of it (the fields
    they read: widths, candidates, repaired, how the search ended); None when nothing is."""
    if not isinstance(arch, dict):
        return f"'{prefix.rstrip('.') or 'arch'}' is not an object"
    widths, cands = arch.get("widths"), arch.get("candidates", {})
    if not isinstance(widths, dict) or not all(isinstance(w, int) and not isinstance(w, bool) for w in widths.values()):
        return f"'{prefix}widths' is not an object of channel counts"
    if not isinstance(cands, dict) or not all(isinstance(c, list) and c and all(is_number(x) for x in c)
                                              and g in widths for g, c in cands.items()):
        return f"'{prefix}candidates' is not an object of the widths' groups -> lists of widths"
    if not isinstance(arch.get("repaired", []), list):
        return f"'{prefix}repaired' is not a list"
    search = arch.get("search", {})
    before = search.get("argmax_before_repair", {}) if isinstance(search, dict) else None
    if not isinstance(before, dict):
        return f"'{prefix}search' is not an object with an object 'argmax_before_repair'"
    for where, key in ((before, "over_budget"), (search, "mean_max_prob")):
        if key in where and not is_number(where[key]):
            return f"'{prefix}search.{'argmax_before_repair.' if where is before else ''}{key}' is not a number"
    if not isinstance(search.get("settle_snapped") or [], list):
        return f"'{prefix}search.settle_snapped' is not a list"
    return None


def read_arch(folder: str) -> dict:
    """A finished search's or width baseline's ``arch.json``, checked for what the pages read."""
    path, fix = os.path.join(folder, "arch.json"), run_file_fix(folder)
    a = read_json(path, fix)
    problem = arch_problem(a)
    if problem:
        raise UserError(f"{path}: {problem}: {fix}")
    return a


def read_init_from(folder: str, name: str) -> dict:
    """A retrain's record of the checkpoint it started from ({} when it has none)."""
    path, fix = os.path.join(folder, name), run_file_fix(folder)
    if not os.path.isfile(path):
        return {}
    data = read_json(path, fix)
    if not isinstance(data, dict) or not isinstance(data.get("sha256", ""), str):
        raise UserError(f"{path} is not an object with a text 'sha256': {fix}")
    return data


def read_seconds(path: str, fix: str) -> dict:
    """A ``suite_time.json`` or ``suite_elapsed.json``: an object with a number ``seconds``."""
    data = read_json(path, fix)
    if not isinstance(data, dict) or not is_number(data.get("seconds")):
        raise UserError(f"{path} is not an object with a number 'seconds': {fix}")
    return data


def read_curve(folder: str, key: str) -> list:
    """The values of ``key`` over a run's ``metrics.jsonl`` (one JSON object a line; [] without the file)."""
    import json

    path, fix = os.path.join(folder, "metrics.jsonl"), run_file_fix(folder)
    if not os.path.isfile(path):
        return []
    values = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise UserError(f"{path} line {n} is not JSON ({str(e).splitlines()[0][:80]}): {fix}") from None
            if not isinstance(row, dict) or not (row.get(key) is None or is_number(row.get(key))):
                raise UserError(f"{path} line {n}: not an object with a number '{key}': {fix}")
            values.append(row.get(key))
    return values
