"""What a job meets on many processes and machines, in miniature: a process that dies or hangs, the CPUs a
container or an affinity mask allows, checkpoints damaged on disk or left half-written."""
import importlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing import ProcessExitedException

from resdet.checkpoint.checkpointer import Checkpointer, newest_complete_checkpoint
from resdet.checkpoint.integrity import file_sha256
from resdet.engine import comm, launch
from resdet.engine.launch import ProcessFailed, _failure
from resdet.errors import CheckpointError
from resdet.utils.cpus import available_cpus, cgroup_cpu_limit, threads_per_process

launch_module = importlib.import_module("resdet.engine.launch")  # resdet.engine.launch is also the function

# ---------------------------------------------------------------- CPUs a process may use
def _cgroup(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "400000 100000\n"}, 4.0),  # cgroup v2, docker --cpus 4
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),  # no quota
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # cgroup v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota(tmp_path, files, expected):
    assert cgroup_cpu_limit(_cgroup(tmp_path, files)) == expected


def test_threads_come_from_the_quota_and_the_affinity_mask(tmp_path):
    mask = len(os.sched_getaffinity(0))
    assert available_cpus(_cgroup(tmp_path, {})) == mask
    root = _cgroup(tmp_path, {"cpu.max": "100000 100000"})  # 1 CPU whatever the host has
    assert available_cpus(root) == 1 and threads_per_process(2, root) == 1
    assert available_cpus(_cgroup(tmp_path, {"cpu.max": "50000 100000"})) == 1  # half a CPU: still one thread
    # The affinity mask of the process, as `taskset -c 0` sets it (the host has more cores than that).
    pinned = subprocess.run([sys.executable, "-c", "import os; os.sched_setaffinity(0, {0}); "
                             "from resdet.utils.cpus import available_cpus; print(available_cpus())"],
                            capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "1"


def _report_threads(path: str) -> None:
    with open(f"{path}.{comm.get_rank()}", "w") as file:
        file.write(str(torch.get_num_threads()))


def test_launched_processes_share_the_usable_cpus(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    launch(_report_threads, 2, args=(str(tmp_path / "threads"),))
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert [(tmp_path / f"threads.{rank}").read_text() for rank in range(2)] == [str(expected)] * 2


# ---------------------------------------------------------------- a process that dies or hangs
def _rank1_dies(mode: str) -> None:
    torch.set_num_threads(1)
    for step in range(1000):
        dist.all_reduce(torch.ones(4))
        if comm.get_rank() == 1 and step == 3:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            else:  # hangs: only the collective timeout can end the job
                time.sleep(120)
        time.sleep(0.02)


def test_a_dead_process_ends_the_job_naming_it():
    start = time.monotonic()
    with pytest.raises(ProcessFailed, match=r"rank 1 \(pid \d+\) was killed by SIGKILL") as failure:
        launch(_rank1_dies, 2, args=("kill",))
    assert time.monotonic() - start < 60
    assert failure.value.rank == 1 and failure.value.shell_status == 128 + signal.SIGKILL
    # a process that exits with a status rather than a signal is named by it
    assert str(_failure(ProcessExitedException("", 1, 42, exit_code=7), 1, 2)) == "rank 3 (pid 42) exited with status 7"


def test_dist_timeout_ends_a_job_whose_process_hangs(monkeypatch):
    monkeypatch.setattr(launch_module, "EXIT_GRACE_SECONDS", 1.0)  # the launcher's wait before SIGTERM, SIGKILL
    start = time.monotonic()
    with pytest.raises(ProcessFailed, match="rank [01]"):
        launch(_rank1_dies, 2, args=("hang",), timeout=timedelta(seconds=3))
    assert time.monotonic() - start < 60  # 3 s of timeout, then the launcher's grace periods


def test_tools_pass_dist_timeout_and_the_device_s_backend_to_the_launcher(monkeypatch):
    """DIST.TIMEOUT reaches the process group; a CPU model gets gloo even where CUDA exists."""
    from resdet.engine import defaults

    calls = []
    monkeypatch.setattr(defaults, "launch", lambda *args: calls.append(args))
    args = defaults.default_argument_parser().parse_args(
        ["--num-gpus", "2", "DIST.TIMEOUT", "42", "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2"])
    assert defaults.launch_tool(lambda _: None, args) == 0
    *_, timeout, backend = calls[0]
    assert timeout == timedelta(seconds=42) and backend == "gloo"


# ---------------------------------------------------------------- checkpoints damaged on disk
def _checkpoints(tmp_path, iterations=(2, 4, 6)):
    model = nn.Linear(3, 2)
    checkpointer = Checkpointer(model, str(tmp_path))
    for iteration in iterations:
        nn.init.constant_(model.weight, float(iteration))
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
    return checkpointer


def _flip_byte(path, offset_from_end=None):
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if offset_from_end is None else len(data) - offset_from_end
    data[position] ^= 0x55
    path.write_bytes(bytes(data))


def test_sidecar_digest_is_what_sha256sum_checks(tmp_path):
    _checkpoints(tmp_path, (2,))
    digest, name = (tmp_path / "model_0000002.pth.sha256").read_text().split()
    assert name == "model_0000002.pth" and digest == file_sha256(str(tmp_path / "model_0000002.pth"))
    check = subprocess.run(["sha256sum", "-c", "model_0000002.pth.sha256"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0


def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, caplog):
    checkpointer = _checkpoints(tmp_path)
    # A flipped byte inside the weights: torch would load it without complaint, as a wrong weight.
    _flip_byte(tmp_path / "model_0000006.pth")
    assert newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000004.pth")
    assert "model_0000006.pth is damaged: its SHA-256" in caplog.text
    restored = nn.Linear(3, 2)
    extra = Checkpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and torch.all(restored.weight == 4.0)
    # Cut short, and without its sidecar (a file from elsewhere): torch cannot read it, so it is passed over too.
    (tmp_path / "model_0000004.pth.sha256").unlink()
    with open(tmp_path / "model_0000004.pth", "r+b") as file:
        file.truncate(100)
    assert newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000002.pth")
    assert checkpointer.get_checkpoint_file().endswith("model_0000006.pth")  # the pointer itself is unchanged


def test_no_complete_checkpoint_is_an_error_naming_each_file(tmp_path):
    _checkpoints(tmp_path, (2, 4))
    for name in ("model_0000002.pth", "model_0000004.pth"):
        _flip_byte(tmp_path / name, offset_from_end=40)
    with pytest.raises(CheckpointError, match="no complete checkpoint.*model_0000004.pth.*model_0000002.pth"):
        newest_complete_checkpoint(str(tmp_path))


def test_resume_removes_what_a_killed_write_left(tmp_path):
    _checkpoints(tmp_path, (2,))
    leftover = tmp_path / ".model_0000004.pth.abc123.tmp"
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")
    extra = Checkpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 2 and not leftover.exists()
