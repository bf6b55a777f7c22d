"""The paper's analysis figures: training curves (Fig. 4 and 6) and layer responses (Fig. 7), and the demo's
panels of curves, as PNG files."""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from matplotlib.figure import Figure  # pyplot-free: no display or global backend needed
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

Series = Tuple[List[float], List[float]]  # (iterations, values)
_LINE_STYLES = ("-", "--", ":", "-.")  # one per run in plot_panels


def read_json_lines(path: str) -> List[dict]:
    """The objects of a JSON-lines file (metrics.json), skipping blank lines."""
    rows = []
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_number}: not a JSON object ({err})") from None
    return rows


def distinct_labels(names: Sequence[str]) -> List[str]:
    """`names` with an index appended to the ones that repeat, so legends and dict keys stay apart."""
    return [f"{name}-{index}" if names.count(name) > 1 else name for index, name in enumerate(names)]


def _metric(row: dict, name: str) -> Optional[float]:
    """`row[name]`, or the value of a key ending in "/name" (e.g. "eval/top1"); None when absent."""
    for key, value in row.items():
        if (key == name or key.endswith("/" + name)) and isinstance(value, (int, float)):
            return float(value)
    return None


def metric_series(rows: Sequence[dict], name: str) -> Series:
    """(iteration, value) of `name` over the rows; a row without "iteration" takes the previous one's."""
    iterations, values, iteration = [], [], 0
    for row in rows:
        iteration = row.get("iteration", iteration)
        value = _metric(row, name)
        if value is not None:
            iterations.append(iteration)
            values.append(value)
    return iterations, values


def loss_names(rows: Sequence[dict]) -> List[str]:
    """The losses the rows carry: "total_loss" first, then each "loss_*" in name order."""
    names = {key for row in rows for key in row if key.startswith("loss_")}
    total = ["total_loss"] if any("total_loss" in row for row in rows) else []
    return total + sorted(names)


@dataclass
class Panel:
    """One axis of a panel figure: curves keyed by (run, metric)."""

    title: str
    ylabel: str
    curves: Dict[Tuple[str, str], Series]
    log_y: bool = False


def plot_panels(panels: Sequence[Panel], path: str) -> None:
    """Panels side by side; in each, the colour says the metric and the line style the run, so runs compare."""
    figure = Figure(figsize=(5.5 * len(panels), 4.5))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels):
        metrics = list(dict.fromkeys(metric for _, metric in panel.curves))
        runs = list(dict.fromkeys(run for run, _ in panel.curves))
        for (run, metric), (iterations, values) in panel.curves.items():
            if not iterations:
                continue
            # Evaluations are few: markers keep a single final evaluation visible.
            axis.plot(iterations, values, color=f"C{metrics.index(metric) % 10}",
                      linestyle=_LINE_STYLES[runs.index(run) % len(_LINE_STYLES)],
                      marker="o" if len(iterations) <= 30 else None, markersize=3,
                      linewidth=1.8 if metric == "total_loss" else 1.0, label=f"{run} {metric}")
        axis.set_title(panel.title, fontsize="medium")
        axis.set_xlabel("iteration")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(panel.ylabel)
        if panel.log_y:
            axis.set_yscale("log")
        if axis.lines:
            _legend(axis, metrics, runs)
        else:
            axis.text(0.5, 0.5, "no values", transform=axis.transAxes, ha="center", va="center")
        axis.grid(alpha=0.3)
    _save(figure, path)


def _legend(axis, metrics: List[str], runs: List[str]) -> None:
    """One entry per curve for a single run; with several, one per metric (colour) and one per run (style)."""
    if len(runs) == 1:
        axis.legend(fontsize="small")
        return
    handles = [Line2D([], [], color=f"C{index % 10}", label=metric) for index, metric in enumerate(metrics)]
    handles += [Line2D([], [], color="0.3", linestyle=_LINE_STYLES[index % len(_LINE_STYLES)], label=run)
                for index, run in enumerate(runs)]
    axis.legend(handles=handles, fontsize="small")


def plot_training_curves(runs: Dict[str, Tuple[Series, Series]], path: str, key: str) -> None:
    """One colour per run: `key` as a thin line, test error (100 - top1) as a bold dashed line on a second axis."""
    figure = Figure(figsize=(8, 5))
    loss_axis = figure.subplots()
    error_axis = None
    for color_index, (label, (train, test_error)) in enumerate(runs.items()):
        color = f"C{color_index % 10}"
        if train[0]:
            loss_axis.plot(*train, color=color, linewidth=0.8, label=f"{label} {key}")
        if test_error[0]:
            error_axis = error_axis or loss_axis.twinx()
            error_axis.plot(*test_error, color=color, linewidth=2.5, linestyle="--", marker="o",
                            markersize=3, label=f"{label} test error")
    loss_axis.set_xlabel("iteration")
    loss_axis.set_ylabel(key)
    handles, labels = loss_axis.get_legend_handles_labels()
    if error_axis is not None:
        error_axis.set_ylabel("test error (%)")
        more_handles, more_labels = error_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, fontsize="small")
    loss_axis.grid(alpha=0.3)
    _save(figure, path)


def plot_layer_responses(responses: Dict[str, Sequence[float]], path: str) -> None:
    """Fig. 7: std of each 3x3 layer's response, in network order (left) and sorted by magnitude (right)."""
    figure = Figure(figsize=(12, 4.5))
    order_axis, sorted_axis = figure.subplots(1, 2)
    for label, stds in responses.items():
        layers = range(1, len(stds) + 1)
        order_axis.plot(layers, stds, linewidth=1.2, label=label)
        sorted_axis.plot(layers, sorted(stds, reverse=True), linewidth=1.2, label=label)
    order_axis.set_xlabel("layer index (original)")
    sorted_axis.set_xlabel("layer index (sorted by magnitude)")
    for axis in (order_axis, sorted_axis):
        axis.set_ylabel("std")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    _save(figure, path)


def plot_plain_vs_residual(curves: Dict[str, Tuple[Series, Series]], labels: Dict[str, str], deeper: str,
                           held_out: str, path: str) -> None:
    """Figs. 4 and 6: plain nets left, ResNets right (runs named plain* / resnet*), each run's (training, held-out)
    error curves, thin and bold in one colour; runs whose name contains `deeper` red, the others orange."""
    families = [family for family in ("plain", "resnet") if any(run.startswith(family) for run in curves)]
    figure = Figure(figsize=(5.5 * len(families), 4.5))
    for axis, family in zip(figure.subplots(1, len(families), squeeze=False)[0], families):
        for run, (train, test) in curves.items():
            if run.startswith(family):
                color = "C3" if deeper in run else "C1"
                # markers: a short check has one or two measurements, which a line alone would not show
                axis.plot(*train, color=color, linewidth=0.8, marker=".", markersize=2, label=f"{labels[run]} train")
                axis.plot(*test, color=color, linewidth=2.2, marker="o", markersize=3,
                          label=f"{labels[run]} {held_out}")
        axis.set_title("plain networks" if family == "plain" else "ResNets", fontsize="medium")
        axis.set_xlabel("iteration")
        axis.set_ylabel("error (%)")
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    _save(figure, path)


def _save(figure: Figure, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
