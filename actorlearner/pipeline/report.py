"""Run reports: summary.json, the printed table, and depth.png (pass@1 vs refinement round)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# results[model_stage][benchmark] = {"pass@1": [round0, round1, ...], "pass@10": [...],
#                                    "refine_success": [...], "num_tasks": n, ...}
Results = dict[str, dict[str, dict[str, Any]]]


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def print_table(results: Results) -> str:
    """Render the per-stage, per-round table with rich and return it as text too."""
    from rich.console import Console
    from rich.table import Table

    rounds = max((len(m["pass@1"]) for s in results.values() for m in s.values()), default=0)
    table = Table(title="pass@1 per refinement round (refinement success rate in brackets)")
    table.add_column("benchmark")
    table.add_column("stage")
    for r in range(rounds):
        table.add_column(f"round {r}", justify="right")
    for bench in sorted({b for s in results.values() for b in s}):
        for stage, per_bench in results.items():
            if bench not in per_bench:
                continue
            m = per_bench[bench]
            cells = []
            for r, p in enumerate(m["pass@1"]):
                succ = m.get("refine_success", [])
                extra = f" [{succ[r]:.0%}]" if r > 0 and r < len(succ) else ""
                cells.append(f"{p:.1%}{extra}")
            table.add_row(bench, stage, *cells)
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def print_groups(rows: dict[str, dict[str, dict]], title: str) -> str:
    """Render pass@1 per round for each group (bug type) and stage; return it as text."""
    from rich.console import Console
    from rich.table import Table

    rounds = max((len(g["pass@1"]) for s in rows.values() for g in s.values()), default=0)
    table = Table(title=title)
    for name in ("group", "tasks", "stage"):
        table.add_column(name, justify="right" if name == "tasks" else "left")
    for r in range(rounds):  # one column (scored samples, no refinement): just pass@1
        table.add_column("pass@1" if rounds == 1 else f"round {r}", justify="right")
    for group in sorted({g for s in rows.values() for g in s}):
        for stage, per_group in rows.items():
            if group in per_group:
                row = per_group[group]
                cells = [f"{p:.1%}" for p in row["pass@1"]]
                table.add_row(group, str(row["num_tasks"]), stage, *cells)
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def plot_depth(results: Results, path: Path) -> None:
    """depth.png: one panel per benchmark, pass@1 against refinement round, a line per stage."""
    import matplotlib.pyplot as plt

    fig = depth_figure(results)
    if fig is None:
        return
    fig.savefig(path, dpi=120)
    plt.close(fig)


def depth_figure(results: Results) -> Any:
    """The figure of `plot_depth` (None without results): pass@1 on a 0-100% axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = sorted({b for s in results.values() for b in s})
    if not benches:
        return None
    fig, axes = plt.subplots(1, len(benches), figsize=(4.5 * len(benches), 3.6), squeeze=False)
    for ax, bench in zip(axes[0], benches, strict=True):
        for stage, per_bench in results.items():
            if bench in per_bench:
                ys = [100 * p for p in per_bench[bench]["pass@1"]]
                ax.plot(range(len(ys)), ys, marker="o", label=stage)
        ax.set_title(bench)
        ax.set_xlabel("refinement round")
        ax.set_ylabel("pass@1 (%)")
        ax.set_ylim(0, 100)  # a pass rate: never below 0%, and comparable across panels
        ax.set_xticks(range(max(len(s[bench]["pass@1"]) for s in results.values() if bench in s)))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
