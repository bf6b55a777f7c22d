#!/usr/bin/env python
"""The machine's convolution throughput, printed beside timings so that figures from different machines (or the
same one under load) can be compared: GFLOP/s of a 3x3, 256-channel convolution on a 56x56 map, fp32, median of 20.

    python tools/conv_throughput.py [--threads N]
"""
import statistics
import sys
import time

import torch

from resdet.utils.cli import ToolArgumentParser, run_tool

CHANNELS, SIZE, KERNEL, RUNS = 256, 56, 3, 20


def conv_gflops(threads: int) -> float:
    """Median GFLOP/s (2 FLOPs a multiply-add) of the reference convolution on `threads` threads."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(CHANNELS, CHANNELS, KERNEL, padding=1, bias=False).eval()
    image = torch.randn(1, CHANNELS, SIZE, SIZE)
    flops = 2 * CHANNELS * CHANNELS * KERNEL * KERNEL * SIZE * SIZE
    times = []
    with torch.inference_mode():
        for run in range(RUNS + 3):
            start = time.perf_counter()
            conv(image)
            if run >= 3:  # the first runs pick the kernel and fill the caches
                times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def main() -> None:
    """Print the throughput."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    print(f"conv 3x3 {CHANNELS}ch {SIZE}x{SIZE} fp32, {args.threads} threads: {conv_gflops(args.threads):.0f} GFLOP/s")


if __name__ == "__main__":
    sys.exit(run_tool(main))
