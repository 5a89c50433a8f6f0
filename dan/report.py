"""What generated pages and tables share: the two-standard-error verdict, number formatting over
seeds, and writing a generated Markdown page that keeps its hand-written notes.

A low-level module: it imports nothing from ``dan`` (the suites, ``dan.latency`` and
``tools/coverage.py`` all use it, so it must not pull the training side in).

>>> verdict([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], True, 0.0)[2]
'**supported**'
>>> mean_std([0.9, 0.92], 100, 2)
'91.00 ± 1.41'
"""

from __future__ import annotations

import math
import os
import statistics

NOTES_MARK = "<!-- notes: everything below this line is written by hand and kept when the page is regenerated -->"


# The verdict of a comparison with one seed on a side: its difference is shown, but one seed has no
# spread to test it against (the pages said "supported (one seed)" for any positive difference).
ONE_SEED = "cannot be tested (one seed: no standard error)"


def verdict(a: list, b: list, higher: bool, margin: float) -> tuple[float, float, str]:
    """Compare two lists of per-seed results.

    Args:
        a, b: one value per seed (``None`` entries are ignored).
        higher: whether a larger value is better (top-1) or a smaller one (cross-entropy).
        margin: added to the difference before the test (0.01: "A is within one point of B").

    Returns:
        The difference of means (in the better direction, plus the margin), its standard error
        over seeds, and the verdict: supported when the difference exceeds two standard errors,
        not supported when it is below minus two, else within seed noise ("not run" when either
        side has no value; "cannot be tested (one seed...)" when a side has one value: without a
        standard error a difference is no verdict, and "supported (one seed)" read as one).
    """
    a = [x for x in a if x is not None]
    b = [x for x in b if x is not None]
    if not a or not b:
        return math.nan, math.nan, "not run"
    d = (statistics.mean(a) - statistics.mean(b)) * (1 if higher else -1) + margin
    if len(a) < 2 or len(b) < 2:
        return d, math.nan, ONE_SEED
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    if d > 2 * se:
        return d, se, "**supported**"
    if d < -2 * se:
        return d, se, "**not supported**"
    return d, se, "within seed noise"


def paired_verdict(diffs: list) -> tuple[float, float, str]:
    """The verdict of per-seed differences (A − B, each pair sharing its seed and, in the search
    suite's inherit recipe, its supernet): the mean difference against two standard errors of
    that mean (``stdev(d) / sqrt(n)``), read as :func:`verdict` reads its difference."""
    diffs = [x for x in diffs if x is not None]
    if not diffs:
        return math.nan, math.nan, "not run"
    d = statistics.mean(diffs)
    if len(diffs) < 2:
        return d, math.nan, ONE_SEED
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    if d > 2 * se:
        return d, se, "**supported**"
    if d < -2 * se:
        return d, se, "**not supported**"
    return d, se, "within seed noise"


def counted(n, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (a smoke page said "for 1 epochs")."""
    return f"{n:g} {noun}" + ("" if n == 1 else "s")


def median(values) -> float:
    """Median of the values that are not ``None``; NaN when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else math.nan


def mean_std(values, scale: float, digits: int) -> str:
    """``"mean ± std"`` of the values that are not ``None``, times ``scale``, with ``digits``
    decimals; the value alone when there is one, ``"-"`` when there is none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def write_page(md_path: str, lines: list) -> str:
    """Write a generated page from its lines; hand-written text below :data:`NOTES_MARK` in the
    old page is kept. Returns the text written."""
    notes = ""
    if os.path.isfile(md_path):
        with open(md_path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK) + len(NOTES_MARK):]
    text = "\n".join(lines).rstrip() + "\n\n" + NOTES_MARK + (notes if notes else "\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(text)
    return text
