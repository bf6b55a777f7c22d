"""Black-box runs of tools/train_cls.py as a job on many processes meets them: a process killed mid-run (resdet's
launcher and torchrun, with restarts), `kill -9` during a checkpoint write, two launchers as two machines on
127.0.0.1 (two torchrun agents with the c10d rendezvous behave alike; not repeated here, for the suite's time).
Each result is compared with the weights of one uninterrupted `--num-gpus 2` run, bit for bit (gloo on the CPU is
deterministic)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from resdet.engine.launch import _find_free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
SCRIPT = "tools/train_cls.py"
TOY = ["--config", "configs/toy_cls_r18.yaml", "SOLVER.IMS_PER_BATCH", "4", "INPUT.CROP.SIZE",
       "32", "DATASETS.TEST", "()", "SEED", "0", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2"]
TRAIN = [*TOY, "SOLVER.CHECKPOINT_PERIOD", "4", "SOLVER.MAX_ITER", "12"]
pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="taskset-style pinning needs Linux")


def _start(command, out_dir, datasets_root, cpu=None):
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root))
    env.pop("OMP_NUM_THREADS", None)  # threads come from the CPUs each process may use
    # as `taskset -c CPU`: a machine of one core
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen([*command, "OUTPUT_DIR", str(out_dir)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=pin)


def _finish(process, timeout=240):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, output


def _weights(out_dir):
    return torch.load(os.path.join(out_dir, "model_final.pth"), weights_only=True)["model"]


def _assert_same_weights(out_dir, reference):
    weights = _weights(out_dir)
    assert weights.keys() == reference.keys()
    different = [name for name in reference if not torch.equal(weights[name], reference[name])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"


def _rank_pid(out_dir, rank, process, timeout=120):
    """The pid that rank `rank` logs once a checkpoint at iteration 4 exists."""
    log = os.path.join(out_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isfile(os.path.join(out_dir, "model_0000004.pth.sha256")) and os.path.isfile(log):
            found = re.search(r"rank \d+ of \d+, pid (\d+)", open(log).read())
            if found:
                return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at iteration 4 within {timeout} s: {_finish(process)[1][-3000:]}")


@pytest.fixture(scope="module")
def uninterrupted(toy_datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    status, output = _finish(_start([sys.executable, SCRIPT, "--num-gpus", "2", *TRAIN], out, toy_datasets))
    assert status == 0, output[-3000:]
    final, early = _weights(out), torch.load(out / "model_0000004.pth", weights_only=True)["model"]
    # the comparisons below mean something only if training moves the weights after iteration 4
    assert all(not torch.equal(final[name], early[name]) for name in final if name.endswith("conv1.weight"))
    return final


def test_a_killed_process_restarts_the_job_from_its_checkpoint(toy_datasets, tmp_path, uninterrupted):
    """resdet's launcher: kill -9 one of two processes; the other stops, the message names the rank, how it
    ended and the checkpoint; --max-restarts 1 restarts both, which end with the uninterrupted run's weights."""
    out = tmp_path / "out"
    job = _start([sys.executable, SCRIPT, "--num-gpus", "2", "--max-restarts", "1", *TRAIN], out, toy_datasets)
    pid = _rank_pid(out, 1, job)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    status, output = _finish(job)
    assert status == 0, output[-3000:]
    message = next(line for line in output.splitlines() if "error: rank 1" in line)
    assert f"rank 1 (pid {pid}) was killed by SIGKILL and the other processes were stopped" in message
    assert re.search(r"The newest complete checkpoint is \S+model_00000(04|08)\.pth", message)
    assert "restart 1 of 1" in output
    resumed = re.findall(r"training from iteration (\d+) to 12", (out / "log.txt").read_text())
    assert resumed[0] == "0" and resumed[1] in ("4", "8")
    _assert_same_weights(out, uninterrupted)
    assert time.monotonic() - killed < 120  # stop, restart and finish (tests/engine/test_faults.py times the stop)


def test_torchrun_max_restarts_resumes_by_itself(toy_datasets, tmp_path, uninterrupted):
    out = tmp_path / "out"
    # A c10d rendezvous at a fixed endpoint, as on a cluster: its store outlives the restart (without a prefix per
    # attempt the restarted processes waited for the dead ones' addresses).
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_find_free_port()}", "--rdzv-id", "restart"]
    job = _start([*TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", *rendezvous, "--max-restarts", "1", SCRIPT,
                  *TRAIN], out, toy_datasets)
    os.kill(_rank_pid(out, 1, job), signal.SIGKILL)
    status, output = _finish(job)
    assert status == 0, output[-3000:]
    # The survivor names the checkpoint (torchrun names the process that died), then the restart continues.
    assert re.search(r"rank 0 stopped on RuntimeError: .* The newest complete checkpoint is \S+model_00000(04|08)",
                     output)
    assert re.search(r"training from iteration [48] to 12", (out / "log.txt").read_text())
    _assert_same_weights(out, uninterrupted)


def test_two_launchers_as_two_machines_train_like_one(toy_datasets, tmp_path, uninterrupted):
    out, url = tmp_path / "out", f"tcp://127.0.0.1:{_find_free_port()}"
    machines = [_start([sys.executable, SCRIPT, "--num-machines", "2", "--machine-rank", str(rank), "--dist-url", url,
                        *TRAIN], out, toy_datasets, cpu=rank % len(os.sched_getaffinity(0))) for rank in (0, 1)]
    for machine in machines:
        status, output = _finish(machine)
        assert status == 0, output[-3000:]
    _assert_same_weights(out, uninterrupted)
    assert "CPU threads 1" in (out / "log.txt.rank1").read_text()  # from its affinity mask of one core


def test_kill_during_a_checkpoint_write_then_resume(toy_datasets, tmp_path):
    """kill -9 while a checkpoint's temporary file is being written: last_checkpoint still names a complete one,
    --resume continues from it and removes the leftover."""
    out = tmp_path / "out"
    single = [*TOY, "SOLVER.CHECKPOINT_PERIOD", "1"]
    for _attempt in range(3):  # a write takes a fraction of a second: the poll below may miss it
        shutil.rmtree(out, ignore_errors=True)
        job = _start([sys.executable, SCRIPT, *single, "SOLVER.MAX_ITER", "100000"], out, toy_datasets)
        deadline = time.monotonic() + 120
        caught = []
        while not caught and time.monotonic() < deadline and job.poll() is None:
            if os.path.isfile(out / "last_checkpoint"):  # a write after the first complete checkpoint
                caught = [name for name in os.listdir(out) if name.startswith(".model_") and name.endswith(".tmp")]
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        if caught and (out / caught[0]).exists():
            break
    else:
        pytest.fail("never caught a checkpoint write in progress")
    pointed = (out / "last_checkpoint").read_text()
    done = int(pointed[len("model_"):-len(".pth")])
    resumed = _start([sys.executable, SCRIPT, "--resume", *single, "SOLVER.MAX_ITER", str(done + 1)], out,
                     toy_datasets)
    status, output = _finish(resumed)
    assert status == 0, output[-3000:]
    assert f"training from iteration {done} to {done + 1}" in (out / "log.txt").read_text()
    assert not any(name.endswith(".tmp") for name in os.listdir(out))
