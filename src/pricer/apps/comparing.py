"""``pricer compare`` on a terminal: a ``RunComparison`` as a few short tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pricer.tracking.comparison import RunComparison


def _short(value: str | None, width: int = 48) -> str:
    if value is None:
        return "-"
    return value if len(value) <= width else value[: width - 1] + "…"


def _money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def print_comparison(comparison: RunComparison, console: Console) -> None:
    console.print(f"pipeline run {comparison.before} -> {comparison.after}")
    changed = Table(title="What changed")
    for column in ("setting", "before", "after"):
        changed.add_column(column)
    for change in comparison.params:
        changed.add_row(change.name, _short(change.before), _short(change.after))
    if comparison.commit is not None:
        changed.add_row("git.commit", _short(comparison.commit.before), _short(comparison.commit.after))
    for change in comparison.data:
        if change.before is None or change.after is None:
            state = "not read in one run (its stages were skipped: inputs unchanged)"
            changed.add_row(f"data.{change.name}", _short(change.before, 16), _short(change.after, 16) + f"  {state}")
        elif change.before != change.after:
            changed.add_row(f"data.{change.name}", _short(change.before, 16), _short(change.after, 16))
    if not changed.row_count:
        changed.add_row("(nothing: same params, data and code)", "", "")
    console.print(changed)

    outcome = Table(title="What came of it (test metrics; MAE in USD, lower is better)")
    for column, justify in (("metric", "left"), ("before", "right"), ("after", "right"), ("delta", "right")):
        outcome.add_column(column, justify=justify)  # type: ignore[arg-type]
    for metric in comparison.metrics:
        if metric.name.startswith("hit_rate."):
            cells = [f"{v:.1%}" if v is not None else "-" for v in (metric.before, metric.after)]
            delta = f"{metric.delta:+.1%}" if metric.delta is not None else "-"
        else:
            cells = [_money(metric.before), _money(metric.after)]
            delta = _money(metric.delta, signed=True)
        outcome.add_row(metric.name, *cells, delta)
    console.print(outcome)

    if comparison.decisions:
        gate = Table(title="The gate, in the later run")
        for column in ("registered model", "version", "decision", "reason"):
            gate.add_column(column)
        for decision in comparison.decisions:
            gate.add_row(decision.registered_name, f"v{decision.version}", decision.decision,
                         _short(decision.reason, 90))
        console.print(gate)
