"""Two gloo processes started by `launch` train like one process on the whole batch."""
import os

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import resdet
from resdet.engine import ClassificationLoss, Trainer, comm, launch, prepare_model
from resdet.evaluation import ClassificationEvaluator
from resdet.solver import build_optimizer

BATCH, STEPS = 8, 3


def _batches():
    generator = torch.Generator().manual_seed(3)
    return [(torch.rand(BATCH, 3, 6, 6, generator=generator) * 255, torch.randint(0, 3, (BATCH,), generator=generator))
            for _ in range(STEPS)]


def _train(out_path: str) -> None:
    """Each rank trains on its slice of every batch; rank 0 saves the weights and some gathered values."""
    torch.set_num_threads(1)
    rank, world_size = comm.get_rank(), comm.get_world_size()
    per_rank = BATCH // world_size
    shard = [(images[rank * per_rank:(rank + 1) * per_rank], labels[rank * per_rank:(rank + 1) * per_rank])
             for images, labels in _batches()]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    cfg = resdet.get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.NESTEROV = 0.01, True
    optimizer = build_optimizer(cfg, model)
    wrapped = prepare_model(model)
    assert isinstance(wrapped, nn.parallel.DistributedDataParallel) == (world_size > 1)
    Trainer(wrapped, iter(shard), optimizer, ClassificationLoss(torch.device("cpu"))).train(0, STEPS)

    evaluator = ClassificationEvaluator(topk=(1,))
    evaluator.process(torch.full((rank + 1,), rank), torch.eye(3)[[rank] * (rank + 1)])  # all correct
    evaluator.process(torch.tensor([2]), torch.eye(3)[[0]])  # one wrong per rank
    accuracy = evaluator.evaluate()["top1"]
    gathered = comm.all_gather({"rank": rank, "local_rank": comm.get_local_rank()})
    losses = comm.reduce_loss_dict({"loss": torch.tensor(float(rank))})
    comm.synchronize()
    if comm.is_main_process():
        torch.save({"model": model.state_dict(), "accuracy": accuracy, "gathered": gathered, "losses": losses},
                   out_path)


def test_two_gloo_processes_match_one_process(tmp_path):
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    launch(_train, 1, args=(one,))
    launch(_train, 2, args=(two,))
    single = torch.load(one, weights_only=True)
    double = torch.load(two, weights_only=True)
    for name, value in single["model"].items():
        assert (double["model"][name] - value).abs().max() <= 1e-5, name
    assert single["model"]["5.weight"].abs().sum() > 0
    assert double["gathered"] == [{"rank": 0, "local_rank": 0}, {"rank": 1, "local_rank": 1}]
    assert double["losses"] == {"loss": 0.5}
    # rank 0: 1 right 1 wrong; rank 1: 2 right 1 wrong -> 3 / 5
    assert double["accuracy"] == pytest.approx(60.0)
    assert single["accuracy"] == pytest.approx(50.0)
    assert not comm.is_distributed()


def test_auto_dist_url_needs_one_machine():
    with pytest.raises(ValueError, match="one machine"):
        launch(_train, 2, num_machines=2, args=("unused",))


def test_torchrun_environment(tmp_path, monkeypatch):
    """Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) launch joins the env:// group without spawning."""
    from resdet.engine.launch import _find_free_port

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_find_free_port()))
    seen = []
    launch(lambda: seen.append((comm.is_distributed(), comm.get_world_size(), os.getpid())), 4)
    assert seen == [(True, 1, os.getpid())]
    assert not comm.is_distributed()
