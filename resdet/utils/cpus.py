"""How many CPUs this process may really use: its affinity mask (taskset, a scheduler's cpuset) bounded by the
cgroup CPU quota (a container's --cpus), rather than os.cpu_count(), which counts the host's cores."""
import math
import os
from typing import Optional

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: str = CGROUP_ROOT) -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (e.g. 4.0 for `docker --cpus 4`), or None without one.

    cgroup v2 keeps "QUOTA PERIOD" (or "max PERIOD") in cpu.max; v1 keeps cpu.cfs_quota_us (-1: none) and
    cpu.cfs_period_us under cpu/ or cpu,cpuacct/.
    """
    v2 = _read(os.path.join(root, "cpu.max"))
    if v2 is not None:
        fields = v2.split()
        if len(fields) == 2 and fields[0] != "max":
            return _quota(fields[0], fields[1])
        return None
    for folder in ("cpu", "cpu,cpuacct"):
        quota = _read(os.path.join(root, folder, "cpu.cfs_quota_us"))
        period = _read(os.path.join(root, folder, "cpu.cfs_period_us"))
        if quota is not None and period is not None and quota.lstrip("-").isdigit() and int(quota) > 0:
            return _quota(quota, period)
    return None


def _quota(quota: str, period: str) -> Optional[float]:
    try:
        value = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def available_cpus(cgroup_root: str = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, bounded by the cgroup quota rounded up; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # macOS, Windows: no affinity masks
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


def threads_per_process(local_processes: int, cgroup_root: str = CGROUP_ROOT) -> int:
    """Intra-op threads for each of `local_processes` CPU processes sharing this machine's usable CPUs."""
    return max(1, available_cpus(cgroup_root) // max(1, local_processes))
