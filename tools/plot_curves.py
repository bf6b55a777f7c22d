#!/usr/bin/env python
"""Training curves in the style of the paper's Fig. 4 and 6, from the metrics.json files of training runs.

    python tools/plot_curves.py --metrics output/plain20/metrics.json output/r20/metrics.json \\
        --labels plain-20 ResNet-20 --output curves.png
    python tools/plot_curves.py --metrics output/r20/metrics.json --key lr --output lr.png

Each run gets one colour: `--key` (default total_loss) of the training rows as a thin line and, when the
run has evaluation rows with a top-1 accuracy ("top1" or "eval/top1"), test error = 100 - top1 as a bold
dashed line on a second axis. Rows may carry different keys; rows without the key are skipped.
"""
import argparse
import os
import sys
from typing import List, Optional

from resdet.errors import UsageError
from resdet.utils.cli import ToolArgumentParser, run_tool
from resdet.utils.plots import distinct_labels, metric_series, plot_training_curves, read_json_lines


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json files (JSON lines), one per run")
    parser.add_argument("--output", default="curves.png", help="PNG file to write")
    parser.add_argument("--key", default="total_loss", help="training metric to plot against iterations")
    parser.add_argument("--labels", nargs="+", help="legend label of each run (default: its directory name)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.metrics):
        parser.error(f"--labels has {len(args.labels)} entries for {len(args.metrics)} --metrics files")
    return args


def run_label(path: str) -> str:
    """The run's directory name (metrics.json always has the same file name)."""
    return os.path.basename(os.path.dirname(os.path.abspath(path)))


def read_metrics(path: str) -> List[dict]:
    """The rows of one --metrics file; a missing or malformed file is a UsageError naming it."""
    if not os.path.isfile(path):
        raise UsageError(f"--metrics: no such file {path}")
    try:
        return read_json_lines(path)
    except ValueError as err:  # undecodable bytes or a line that is not JSON
        raise UsageError(f"--metrics: {err}") from None


def run(args: argparse.Namespace) -> None:
    """Read every metrics file and write the figure."""
    labels = distinct_labels(args.labels or [run_label(path) for path in args.metrics])
    runs = {}
    for label, path in zip(labels, args.metrics):
        rows = read_metrics(path)
        train = metric_series(rows, args.key)
        iterations, top1 = metric_series(rows, "top1")
        if not train[0] and not iterations:
            raise UsageError(f"{path} has no {args.key!r} and no top1 values; choose another --key")
        runs[label] = (train, (iterations, [100.0 - value for value in top1]))
        print(f"{label}: {len(train[0])} {args.key} points, {len(iterations)} test-error points")
    plot_training_curves(runs, args.output, args.key)
    print(f"wrote {args.output}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; user errors end with a message on stderr and exit code 2 (--debug: the traceback)."""
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
