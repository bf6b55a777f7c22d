"""The CUDA-only code paths that need two GPUs, checked against an independent reference.

Two GPUs: a 2-process NCCL job started by `launch` (one process per GPU, TORCH_NCCL_ASYNC_ERROR_HANDLING set,
comm's helpers, DDP gradients against one process on the whole batch, SyncBN against BatchNorm on the whole batch,
every rank's CUDA random state gathered for checkpoints), a spawned job whose rank exits abruptly, and a
torchrun-style job (two tools/train_cls.py processes, no supervisor) whose rank is killed, ended by DIST.TIMEOUT.

Every test is marked `gpu` and skipped where torch.cuda.is_available() is False (the two-GPU ones where fewer than
two devices are visible). Run them with `pytest -m gpu tests/gpu` or tools/gpu_check.sh; docs/gpu.md maps each
test to the code it covers. Comparisons across devices run with TF32 off (`exact_fp32`), so fp32 means fp32.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cuda_helpers import (  # tests/gpu is on sys.path: pytest's rootdir import
    ASYNC_ERROR_VARS,
    DEAD_RANK_LIMIT_S,
    GPUS,
    JOB_DEADLINE_S,
    NOT_TWO_GPUS,
    REPO,
    _fp32_without_tf32,
    _free_port,
    _launch_with_deadline,
    _write_pid,
    needs_two_gpus,
)
from torch import nn

import resdet

# ---------------------------------------------------------------- two GPUs: one NCCL job, several checks

BATCH = 8


def _ddp_model() -> nn.Module:
    """No batch statistics (GroupNorm), so that its gradient on the whole batch is the mean of the halves'."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 5))


def _ddp_batch():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 3, 8, 8, generator=generator), torch.randint(0, 5, (BATCH,), generator=generator)


SYNCBN_WEIGHT = torch.linspace(0.5, 2.0, 6)
SYNCBN_BIAS = torch.linspace(-1.0, 1.0, 6)


def _syncbn_inputs():
    """(x (8,6,5,5), upstream gradient): the second half shifted and scaled, so per-half statistics are far off."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(BATCH, 6, 5, 5, generator=generator)
    x[BATCH // 2:] = 3 * x[BATCH // 2:] + 2
    return x, torch.randn(BATCH, 6, 5, 5, generator=generator)


def _nccl_job(out_dir: str) -> None:
    """One process of a 2-process job started by `launch`: what each NCCL path gives, saved for the tests."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from resdet.engine import ClassificationLoss, comm, prepare_model
    from resdet.engine.rng import RNGStates
    from resdet.modeling.backbone.resnet import get_norm

    _write_pid(out_dir)
    rank, world_size = comm.get_rank(), comm.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device())
    half = BATCH // world_size
    shard = slice(rank * half, (rank + 1) * half)
    result = {"rank": rank, "world_size": world_size, "local_rank": comm.get_local_rank(),
              "backend": str(dist.get_backend()), "device_index": device.index,
              "async_error_handling": {name: os.environ.get(name) for name in ASYNC_ERROR_VARS}}
    with _fp32_without_tf32():
        comm.synchronize()  # a barrier on this rank's device
        result["max_over_ranks"] = comm.max_over_ranks(10 * rank + 1)
        result["all_gather"] = comm.all_gather({"rank": rank})
        result["gather"] = comm.gather(rank)
        result["reduced"] = comm.reduce_loss_dict({"a": torch.tensor(float(rank), device=device),
                                                   "b": torch.tensor(2.0 * rank + 1, device=device)})

        model = _ddp_model().to(device)
        wrapped = prepare_model(model)
        result["ddp_wrapped"] = isinstance(wrapped, DistributedDataParallel)
        images, labels = _ddp_batch()
        losses = ClassificationLoss(device)(wrapped, (images[shard], labels[shard]))
        losses["loss_cls"].backward()
        result["ddp_grads"] = {name: param.grad.detach().cpu() for name, param in model.named_parameters()}
        result["ddp_reduced_loss"] = comm.reduce_loss_dict(losses)["loss_cls"]

        x, upstream = _syncbn_inputs()
        norm = get_norm("SyncBN", x.shape[1]).to(device)
        with torch.no_grad():
            norm.weight.copy_(SYNCBN_WEIGHT)
            norm.bias.copy_(SYNCBN_BIAS)
        local = x[shard].to(device).requires_grad_()
        out = norm(local)
        (out * upstream[shard].to(device)).sum().backward()
        result["syncbn"] = {"type": type(norm).__name__, "y": out.detach().cpu(), "x_grad": local.grad.cpu(),
                            "weight_grad": norm.weight.grad.cpu(), "bias_grad": norm.bias.grad.cpu(),
                            "running_mean": norm.running_mean.cpu(), "running_var": norm.running_var.cpu()}

        torch.cuda.manual_seed(100 + rank)
        torch.rand(3, device=device)
        result["own_cuda_rng"] = torch.cuda.get_rng_state()
        result["gathered_cuda_rng"] = [state.get("cuda") for state in RNGStates().state_dict()["per_rank"]]
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    comm.synchronize()


@pytest.fixture(scope="module")
def nccl_job(tmp_path_factory):
    """Both ranks' results of one 2-process job on 2 GPUs, launched without TORCH_NCCL_ASYNC_ERROR_HANDLING set."""
    if GPUS < 2:
        pytest.skip(NOT_TWO_GPUS)
    out = tmp_path_factory.mktemp("nccl_job")
    with pytest.MonkeyPatch.context() as patch:
        for name in ASYNC_ERROR_VARS:
            patch.delenv(name, raising=False)
        seconds, error = _launch_with_deadline(_nccl_job, (str(out),), out, JOB_DEADLINE_S)
    if error is not None:
        pytest.fail(f"the 2-process NCCL job failed after {seconds:.0f} s: {error!r}")
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.gpu
@needs_two_gpus
def test_nccl_job_runs_one_process_per_gpu(nccl_job):
    """resdet/engine/launch.py launch/_worker: NCCL with CUDA, rank r on GPU r (torch.cuda.set_device)."""
    for rank, result in enumerate(nccl_job):
        assert result["rank"] == result["local_rank"] == result["device_index"] == rank
        assert result["world_size"] == 2 and result["backend"] == "nccl"


@pytest.mark.gpu
@needs_two_gpus
def test_launcher_sets_nccl_async_error_handling(nccl_job):
    """The launcher sets TORCH_NCCL_ASYNC_ERROR_HANDLING=1 in NCCL processes (before their process group exists),
    so that a failed or timed-out collective ends the process instead of hanging it."""
    for result in nccl_job:
        assert result["async_error_handling"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1", result["async_error_handling"]


@pytest.mark.gpu
@needs_two_gpus
def test_comm_helpers_on_nccl(nccl_job):
    """resdet/engine/comm.py on NCCL: synchronize (barrier with device_ids), max_over_ranks (a CUDA tensor),
    all_gather / gather (objects through the current device), reduce_loss_dict (CUDA losses)."""
    for rank, result in enumerate(nccl_job):
        assert result["max_over_ranks"] == 11
        assert result["all_gather"] == [{"rank": 0}, {"rank": 1}]
        assert result["gather"] == ([0, 1] if rank == 0 else [])
        assert result["reduced"] == pytest.approx({"a": 0.5, "b": 2.0})


@pytest.mark.gpu
@needs_two_gpus
def test_ddp_gradients_over_two_nccl_processes_equal_one_process(nccl_job):
    """resdet/engine/trainer.py prepare_model: DistributedDataParallel with device_ids on NCCL averages the halves'
    gradients into the whole batch's."""
    from resdet.engine import ClassificationLoss

    with _fp32_without_tf32():
        model = _ddp_model().cuda()
        loss = ClassificationLoss(torch.device("cuda"))(model, _ddp_batch())["loss_cls"]
        loss.backward()
    expected = {name: param.grad.cpu() for name, param in model.named_parameters()}
    for result in nccl_job:
        assert result["ddp_wrapped"]
        assert result["ddp_reduced_loss"] == pytest.approx(loss.item(), rel=1e-5)
        for name, grad in expected.items():
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(result["ddp_grads"][name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()))


@pytest.mark.gpu
@needs_two_gpus
def test_syncbn_over_two_nccl_processes_equals_batchnorm_over_the_whole_batch(nccl_job):
    """resdet/modeling/backbone/resnet.py get_norm("SyncBN"): statistics, outputs, input gradients and running
    statistics over both processes' halves are BatchNorm's over the concatenated batch (float64, on the CPU); the
    scale and shift gradients are per-process parts that DDP sums."""
    x, upstream = _syncbn_inputs()
    norm = nn.BatchNorm2d(x.shape[1]).double()
    with torch.no_grad():
        norm.weight.copy_(SYNCBN_WEIGHT)
        norm.bias.copy_(SYNCBN_BIAS)
    inputs = x.double().requires_grad_()
    expected = norm(inputs)
    (expected * upstream.double()).sum().backward()

    parts = [result["syncbn"] for result in nccl_job]
    assert {part["type"] for part in parts} == {"SyncBatchNorm"}
    tolerance = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]).double(), expected.detach(), **tolerance)
    torch.testing.assert_close(torch.cat([p["x_grad"] for p in parts]).double(), inputs.grad, **tolerance)
    torch.testing.assert_close((parts[0]["weight_grad"] + parts[1]["weight_grad"]).double(), norm.weight.grad,
                               **tolerance)
    torch.testing.assert_close((parts[0]["bias_grad"] + parts[1]["bias_grad"]).double(), norm.bias.grad, **tolerance)
    for part in parts:
        torch.testing.assert_close(part["running_mean"].double(), norm.running_mean, **tolerance)
        torch.testing.assert_close(part["running_var"].double(), norm.running_var, **tolerance)
    # the check can fail: normalising each half by its own statistics gives something else
    local = F.batch_norm(x[BATCH // 2:].double(), None, None, norm.weight.detach(), norm.bias.detach(), True)
    assert (local - expected[BATCH // 2:].detach()).abs().max() > 0.1


@pytest.mark.gpu
@needs_two_gpus
def test_rng_states_gather_every_ranks_cuda_generator(nccl_job):
    """resdet/engine/rng.py RNGStates.state_dict on NCCL: each rank's CUDA generator, gathered for the checkpoint."""
    own = [result["own_cuda_rng"] for result in nccl_job]
    assert not torch.equal(own[0], own[1])
    for result in nccl_job:
        assert len(result["gathered_cuda_rng"]) == 2
        for gathered, state in zip(result["gathered_cuda_rng"], own):
            assert torch.equal(gathered, state)


# ---------------------------------------------------------------- two GPUs: a rank that dies


def _die_after_first_collective(out_dir: str) -> None:
    """Rank 1 exits abruptly once the ranks have talked; rank 0 then waits in collectives that cannot finish."""
    import torch.distributed as dist

    from resdet.engine import comm

    _write_pid(out_dir)
    tensor = torch.ones(1, device=torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(tensor)
    torch.cuda.synchronize()
    if comm.get_rank() == 1:
        Path(out_dir, "rank1_exiting").touch()
        os._exit(3)
    Path(out_dir, "rank0_waiting").touch()
    deadline = time.monotonic() + 2 * DEAD_RANK_LIMIT_S
    while time.monotonic() < deadline:
        dist.all_reduce(tensor)
        torch.cuda.synchronize()
    Path(out_dir, "rank0_survived").touch()


@pytest.mark.gpu
@needs_two_gpus
def test_spawned_nccl_job_ends_when_a_rank_exits_abruptly(tmp_path):
    """resdet/engine/launch.py launch: a spawned rank that exits with status 3 while its peer waits in a NCCL
    collective ends the whole job, which reports the failure."""
    seconds, error = _launch_with_deadline(_die_after_first_collective, (str(tmp_path),), tmp_path, JOB_DEADLINE_S)
    assert (tmp_path / "rank1_exiting").exists() and (tmp_path / "rank0_waiting").exists(), repr(error)
    assert seconds < DEAD_RANK_LIMIT_S, f"the job took {seconds:.0f} s to end after rank 1 died"
    # the launcher's report of a failed process (torch's ProcessExitedException, or resdet's ProcessFailed)
    assert type(error).__name__ in ("ProcessFailed", "ProcessExitedException", "ProcessRaisedException"), repr(error)
    assert getattr(error, "exit_status", getattr(error, "exit_code", 1)) != 0, repr(error)
    assert not (tmp_path / "rank0_survived").exists()


@pytest.mark.gpu
@needs_two_gpus
def test_killed_rank_ends_a_torchrun_style_job_after_dist_timeout(toy_datasets, tmp_path):
    """Two tools/train_cls.py processes with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
    and nothing supervising them, as on two machines: rank 1 is killed mid-training; with DIST.TIMEOUT 15 and
    TORCH_NCCL_ASYNC_ERROR_HANDLING (set by the launcher) rank 0 ends within 60 s with a non-zero status instead of
    waiting in its collective for good."""
    cfg = resdet.get_cfg()
    if "DIST" not in cfg or "TIMEOUT" not in cfg.DIST:
        pytest.fail("the config has no DIST.TIMEOUT key: a NCCL collective whose peer died waits 30 minutes")
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "tools" / "train_cls.py"), "--config", "configs/toy_cls_r18.yaml",
            "MODEL.DEVICE", "cuda", "DIST.TIMEOUT", "15", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8",
            "INPUT.CROP.SIZE", "32", "DATASETS.TEST", "()", "SEED", "0", "SOLVER.CHECKPOINT_PERIOD", "1000000",
            "SOLVER.MAX_ITER", "1000000", "OUTPUT_DIR", str(out)]
    env = {name: value for name, value in os.environ.items() if name not in ASYNC_ERROR_VARS}
    env.update(RESDET_DATASETS=str(toy_datasets), OMP_NUM_THREADS="2", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    processes = []
    try:
        for rank in range(2):
            console = open(tmp_path / f"console{rank}.txt", "w")  # files: a full pipe would stall a rank
            processes.append(subprocess.Popen(args, cwd=REPO, env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                                              stdout=console, stderr=subprocess.STDOUT, start_new_session=True))
            console.close()
        logs = [out / "log.txt", out / "log.txt.rank1"]
        deadline = time.monotonic() + JOB_DEADLINE_S
        while not all(log.exists() and "training from iteration" in log.read_text() for log in logs):
            ended = [rank for rank, process in enumerate(processes) if process.poll() is not None]
            assert not ended and time.monotonic() < deadline, _consoles(tmp_path, "before training started")
            time.sleep(0.5)
        time.sleep(3)  # a few iterations, so that rank 0 is inside the training loop's collectives
        assert processes[0].poll() is None, _consoles(tmp_path, "rank 0 ended before rank 1 was killed")
        os.killpg(processes[1].pid, signal.SIGKILL)
        try:
            status = processes[0].wait(timeout=DEAD_RANK_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(_consoles(tmp_path, f"rank 0 still running {DEAD_RANK_LIMIT_S} s after rank 1 was killed"))
        assert status != 0, _consoles(tmp_path, "rank 0 exited with status 0")
    finally:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _consoles(folder: Path, message: str) -> str:
    tails = [f"--- rank {rank}:\n" + (folder / f"console{rank}.txt").read_text(errors="replace")[-2500:]
             for rank in range(2) if (folder / f"console{rank}.txt").exists()]
    return "\n".join([message, *tails])
