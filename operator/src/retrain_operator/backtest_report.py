"""How ``retrain-operator backtest`` shows its result: a table for people, and a plot.

The result itself (and its JSON form) is :class:`~retrain_operator.reconcile.backtest.BacktestResult`;
this module only renders it. The plot needs matplotlib, an optional extra (``pip install
'retrain-operator[plot]'``), imported only when a plot is asked for, so the operator's image does
without it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from retrain_operator.domain.numbers import number
from retrain_operator.domain.times import rfc3339
from retrain_operator.reconcile.backtest import LIMITATIONS, BacktestResult
from retrain_operator.settings.durations import format_duration

MESSAGE_WIDTH = 110
STATE_LEVELS = {"clear": 0, "pending": 1, "firing": 2, "inconclusive": -1}
STATE_COLOURS = {"clear": "#4caf50", "pending": "#ffb300", "firing": "#e53935", "inconclusive": "#9e9e9e"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def _number(value: float | None) -> str:
    return "-" if value is None else number(value)


def table(result: BacktestResult) -> str:
    """The timeline of decision changes, then the totals, the query cost and the limitation."""
    lines = [
        f"backtest of {result.policy} from {rfc3339(result.start)} to {rfc3339(result.end)}, "
        f"every {format_duration(result.interval)}{' (dry run)' if result.dry_run else ''}",
        "",
        f"{'TIME':<21} {'ACTION':<13} {'REASON':<19} {'TRIGGERS (state value/threshold)':<40} MESSAGE",
    ]
    for change in result.changes:
        triggers = ", ".join(
            f"{t['name']}={t['state']} {_number(t['value'])}/{_number(t['threshold'])}" for t in change.triggers
        )
        message = (
            change.message if len(change.message) <= MESSAGE_WIDTH else change.message[: MESSAGE_WIDTH - 3] + "..."
        )
        lines.append(f"{rfc3339(change.at):<21} {change.action:<13} {change.reason:<19} {triggers:<40} {message}")
    totals = result.totals()
    lines += [
        "",
        f"evaluations: {totals['evaluations']}",
        f"retrains: {totals['retrains']} (cost {totals['cost']:.4g}, {totals['cpuHours']:.4g} CPU-hours, "
        f"{totals['gpuHours']:.4g} GPU-hours)",
    ]
    if result.dry_run:
        lines.append(f"would retrain (dry run): {totals['wouldRetrain']} evaluations")
    refusals = totals["refusals"]
    shown = (
        "; ".join(f"{r} {n['evaluations']} evaluations in {n['episodes']} episodes" for r, n in refusals.items())
        or "none"
    )
    lines.append(f"refusals: {shown}")
    for run in result.runs:
        lines.append(
            f"  retrain {rfc3339(run.started)} to {rfc3339(run.finished)} by {', '.join(run.triggers)}: "
            f"cost {run.cost:.4g}, {run.cpu_hours:.4g} CPU-hours"
        )
    lines += [
        f"queries: {result.range_queries} range queries to Prometheus, read in {result.read_seconds:.1f} s; "
        f"{result.instant_queries_answered} instant queries of the steps answered from them; "
        f"wall time {result.wall_seconds:.1f} s",
        *(f"note: {text}" for text in LIMITATIONS),
    ]
    return "\n".join(lines)


def plot(result: BacktestResult, path: str) -> None:
    """The metrics with their thresholds, the trigger states and the retrains on one time axis, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'retrain-operator[plot]' (or pip install matplotlib)"
        ) from None
    times: list[datetime] = result.times
    valued = [t for t in result.traces if any(v is not None for v in t.values)]
    rows = len(valued) + 1
    fig, axes = plt.subplots(
        rows, 1, sharex=True, figsize=(14, 2.6 * rows + 1), gridspec_kw={"height_ratios": [3] * len(valued) + [1.2]}
    )
    axes_list: list[Any] = list(axes) if rows > 1 else [axes]
    for ax, trace in zip(axes_list, valued, strict=False):
        values = [float("nan") if v is None else v for v in trace.values]
        thresholds = [float("nan") if v is None else v for v in trace.thresholds]
        ax.plot(times, values, lw=0.8, color="#1565c0", label=f"{trace.name} ({trace.type})")
        ax.plot(times, thresholds, lw=1.0, ls="--", color="#c62828", label="threshold", drawstyle="steps-post")
        ax.set_ylabel(trace.name)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    states_ax = axes_list[-1]
    for row, trace in enumerate(result.traces):
        for state, colour in STATE_COLOURS.items():
            xs = [t for t, s in zip(times, trace.states, strict=True) if s == state]
            if xs:
                states_ax.scatter(xs, [row] * len(xs), s=4, marker="|", color=colour, label=state if row == 0 else None)
    states_ax.set_yticks(range(len(result.traces)), [t.name for t in result.traces])
    states_ax.set_ylim(-0.7, len(result.traces) - 0.3)
    states_ax.set_ylabel("trigger state")
    handles = [
        plt.Line2D([], [], color=c, marker="s", ls="", label=s)  # type: ignore[attr-defined]
        for s, c in STATE_COLOURS.items()
    ]
    handles.append(plt.Line2D([], [], color="#6a1b9a", lw=6, alpha=0.3, label="retrain"))  # type: ignore[attr-defined]
    states_ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=5)
    for ax in axes_list:
        for run in result.runs:
            ax.axvspan(run.started, run.finished, color="#6a1b9a", alpha=0.3, lw=0)
            ax.axvline(run.started, color="#6a1b9a", lw=0.8)
    states_ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    totals = result.totals()
    fig.suptitle(
        f"backtest {result.policy}: {totals['retrains']} retrains, cost {totals['cost']:.4g}, "
        f"{totals['evaluations']} evaluations every {format_duration(result.interval)}\n"
        "metrics replayed as recorded: the history does not show how a retrain would have changed them",
        fontsize=10,
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
