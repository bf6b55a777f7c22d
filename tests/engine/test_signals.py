"""SIGTERM / SIGINT: finish the iteration, save a checkpoint, exit with a message within seconds; every rank stops
at the same iteration; a second signal exits at once; DataLoader workers survive a signal sent to the whole job."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from resdet.checkpoint.checkpointer import Checkpointer
from resdet.engine import ClassificationLoss, HookBase, Trainer, comm, launch
from resdet.engine.hooks import PeriodicCheckpointer
from resdet.engine.signals import StopRequest, forwarded_signals

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A classifier small enough for many iterations a second; far more iterations than the test waits for.
FAST_CLS = ["--config", "configs/toy_cls_r18.yaml", "SOLVER.IMS_PER_BATCH", "8", "INPUT.CROP.SIZE", "32",
            "DATASETS.TEST", "()", "SEED", "0", "SOLVER.CHECKPOINT_PERIOD", "1000000", "SOLVER.MAX_ITER", "1000000"]


def test_first_signal_requests_a_stop_and_a_second_gets_the_old_behaviour():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    # Python's own SIGINT handler, even where the suite runs as a background job (SIGINT ignored, which
    # StopRequest rightly leaves alone)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequest() as stop:
            assert not stop.requested
            signal.raise_signal(signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and received == []
            signal.raise_signal(signal.SIGTERM)  # the second: the handler that was there before runs
            assert received == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):
            with StopRequest() as stop:
                signal.raise_signal(signal.SIGINT)
                assert stop.signum == signal.SIGINT
                signal.raise_signal(signal.SIGINT)  # Python's default: KeyboardInterrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def test_launcher_passes_signals_on_once(tmp_path):
    marker = tmp_path / "got"
    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'a').write('x'), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    before = signal.getsignal(signal.SIGTERM)
    with forwarded_signals([child.pid]):
        signal.raise_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    assert marker.read_text() == "x"
    assert signal.getsignal(signal.SIGTERM) is before


class _SignalAt(HookBase):
    """On rank `rank`, SIGTERM to this process after iteration `iteration`."""

    def __init__(self, rank: int, iteration: int):
        self.rank, self.iteration = rank, iteration

    def after_step(self):
        if comm.get_rank() == self.rank and self.trainer.iter == self.iteration:
            os.kill(os.getpid(), signal.SIGTERM)


def _train_until_signalled(out_dir: str) -> None:
    """Both ranks train; only rank 1 is signalled, after iteration 2. Each rank records where it stopped."""
    torch.set_num_threads(1)
    rank = comm.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter([(torch.rand(2, 3, 2, 2), torch.tensor([0, 1]))] * 20)
    with StopRequest() as stop:
        trainer = Trainer(model, batches, optimizer, ClassificationLoss(torch.device("cpu")), stop_request=stop)
        checkpointer = Checkpointer(model, out_dir, optimizer=optimizer)
        trainer.register_hooks([PeriodicCheckpointer(checkpointer, period=0), _SignalAt(rank=1, iteration=2)])
        trainer.train(0, 20)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as file:
        file.write(f"{trainer.stop_signal} {trainer.iter}")


def test_ranks_stop_together_when_one_is_signalled(tmp_path):
    launch(_train_until_signalled, 2, args=(str(tmp_path),))
    stops = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert stops == [f"{int(signal.SIGTERM)} 3"] * 2  # both stopped after 3 iterations
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert torch.load(tmp_path / "model_0000003.pth", weights_only=True)["iteration"] == 3


def _start(tool_args, out_dir, datasets_root):
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    # A session of its own, as a batch job has: the test can signal the whole job at once.
    return subprocess.Popen([sys.executable, "tools/train_cls.py", *tool_args, "OUTPUT_DIR", str(out_dir)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_log(process, log_path, text, timeout=240.0):
    """Wait until `text` appears in the log (or the process ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isfile(log_path) and text in open(log_path).read():
            return
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"{text!r} never appeared in {log_path}: {process.communicate()[1][-2000:]}")


def _stopped_at(log_text: str) -> int:
    line = next(line for line in log_text.splitlines() if "stopped by SIGTERM after iteration" in line)
    return int(line.split("after iteration ")[1].split()[0])


def test_sigterm_to_the_job_saves_a_checkpoint_and_exits(toy_datasets, tmp_path):
    """SIGTERM to every process of the job (main and DataLoader workers), as a scheduler sends it."""
    out = tmp_path / "out"
    process = _start([*FAST_CLS, "DATALOADER.NUM_WORKERS", "2"], out, toy_datasets)
    _wait_for_log(process, out / "log.txt", "iter 20 ")  # the first logged iteration
    signalled = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - signalled < 15, "took too long to stop"
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    done = _stopped_at((out / "log.txt").read_text())
    assert 20 <= done < 1000000
    assert (out / "last_checkpoint").read_text() == f"model_{done:07d}.pth"
    checkpoint = torch.load(out / f"model_{done:07d}.pth", weights_only=True)
    assert checkpoint["iteration"] == done and checkpoint["data_loader"]["batches"] == done

    resumed = _start(["--resume", *FAST_CLS[:-1], str(done + 2), "DATALOADER.NUM_WORKERS", "0"], out, toy_datasets)
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"training from iteration {done} to {done + 2}" in (out / "log.txt").read_text()


def test_sigterm_to_the_launcher_stops_every_rank(toy_datasets, tmp_path):
    """--num-gpus 2 on the CPU: the launcher passes SIGTERM on; both ranks stop after the same iteration."""
    out = tmp_path / "out"
    process = _start(["--num-gpus", "2", *FAST_CLS, "DATALOADER.NUM_WORKERS", "0"], out, toy_datasets)
    _wait_for_log(process, out / "log.txt", "iter 20 ")
    process.send_signal(signal.SIGTERM)  # the launcher only
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    done = _stopped_at((out / "log.txt").read_text())
    assert _stopped_at((out / "log.txt.rank1").read_text()) == done
    assert (out / "last_checkpoint").read_text() == f"model_{done:07d}.pth"
    assert torch.load(out / f"model_{done:07d}.pth", weights_only=True)["iteration"] == done
