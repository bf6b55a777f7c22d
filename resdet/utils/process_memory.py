"""Memory of a process tree (a training process and its loader workers) as the kernel accounts it, on Linux.

PSS (proportional set size) charges each shared page to the processes that map it in equal parts, so the
sum over a tree counts a page shared by all of them once: memory copied into every worker shows up, memory
they share (a memory-mapped record store, fork's untouched pages) does not multiply.
"""
import os
from typing import List


def child_pids(pid: int) -> List[int]:
    """The direct children of `pid` (by the parent ids in /proc/<pid>/stat)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces and parentheses
        if parent == pid:
            children.append(int(entry))
    return children


def process_tree(pid: int) -> List[int]:
    """`pid` and all its descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(child_pids(current))
    return tree


def pss_mb(pid: int) -> float:
    """Proportional set size of one process in MiB (0 for a process that ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_pss_mb(pid: int) -> float:
    """Summed PSS of `pid` and its descendants, in MiB."""
    return sum(pss_mb(p) for p in process_tree(pid))
