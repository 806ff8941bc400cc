"""The paper's Table 1: problems, unique / correct / wrong solutions, correct refinements,
refinement rate; per problem source and in total."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rich.table import Table

COLUMNS = [
    ("problems", "Problems"),
    ("drawn", "Samples"),
    ("unique", "Unique"),
    ("correct", "Correct"),
    ("wrong", "Wrong"),
    ("attempts", "Replies"),
    ("correct_refinements", "Correct refinements"),
    ("refined", "Wrong fixed"),
    ("refinement_rate", "Refinement rate"),
]


def count_unit(unit: dict) -> Counter:
    c: Counter = Counter(problems=1, drawn=unit["drawn"])
    for s in unit["solutions"]:
        c["unique"] += 1
        if s["passed"]:
            c["correct"] += 1
            continue
        c["wrong"] += 1
        ok = sum(a["passed"] for a in s["attempts"])
        c["attempts"] += len(s["attempts"])
        c["correct_refinements"] += ok
        c["refined"] += ok > 0
    return c


def _finish(c: Counter) -> dict:
    row: dict[str, float] = {key: int(c[key]) for key, _ in COLUMNS if key != "refinement_rate"}
    row["refinement_rate"] = round(c["refined"] / c["wrong"], 4) if c["wrong"] else 0.0
    return row


def summarize(units: Iterable[dict]) -> dict:
    """{"sources": {spec: row}, "total": row}, a row per column of the table."""
    per: dict[str, Counter] = {}
    total: Counter = Counter()
    for unit in units:
        c = count_unit(unit)
        per.setdefault(unit["spec"], Counter()).update(c)
        total.update(c)
    return {"sources": {k: _finish(v) for k, v in per.items()}, "total": _finish(total)}


def running_counts(c: Counter) -> dict[str, str]:
    """A compact running count for a progress bar."""
    row = _finish(c)
    return {
        "unique": str(row["unique"]),
        "correct": str(row["correct"]),
        "wrong": str(row["wrong"]),
        "fixes": str(row["correct_refinements"]),
        "rate": f"{row['refinement_rate']:.0%}",
    }


SHOWN = ("problems", "unique", "correct", "wrong", "correct_refinements", "refinement_rate")


def table(summary: dict, title: str = "Collected data (cf. LeDex Table 1)") -> Table:
    """The printed table: the paper's columns (summary.json has all of them)."""
    t = Table(title=title)
    t.add_column("Source", no_wrap=True)
    names = dict(COLUMNS)
    for key in SHOWN:
        t.add_column(names[key].replace(" ", "\n"), justify="right")
    rows = list(summary["sources"].items())
    if len(rows) > 1:
        rows.append(("total", summary["total"]))
    for name, row in rows:
        t.add_row(
            name, *(f"{row[k]:.1%}" if k == "refinement_rate" else str(row[k]) for k in SHOWN)
        )
    return t
