"""Checkpointer: atomic saves survive a crash mid-write; DDP prefixes; extra state round-trips."""
import os

import pytest
import torch
from torch import nn

from resdet.checkpoint.checkpointer import Checkpointer


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, value)
    return model


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = Checkpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000010", iteration=10)

    real_save = torch.save

    def crashing_save(obj, file):
        real_save(obj, file)
        file.flush()
        os.truncate(file.file.fileno(), 20)  # a partial file, as if the process died while writing
        raise KeyboardInterrupt

    nn.init.constant_(model.weight, 2.0)
    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000020", iteration=20)
    monkeypatch.setattr(torch, "save", real_save)

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000010.pth"
    # no temp files left
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000010.pth", "model_0000010.pth.sha256"]
    restored = _model(0.0)
    extra = Checkpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 10
    assert torch.all(restored.weight == 1.0)


def test_optimizer_state_and_ddp_prefix(tmp_path):
    model = _model(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    Checkpointer(model, str(tmp_path), optimizer=optimizer).save("model_final", iteration=5)

    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert set(data) == {"model", "optimizer", "iteration"}
    # A checkpoint whose keys carry DistributedDataParallel's "module." prefix loads too.
    data["model"] = {f"module.{k}": v for k, v in data["model"].items()}
    torch.save(data, tmp_path / "prefixed.pth")
    restored = _model(0.0)
    restored_optimizer = torch.optim.SGD(restored.parameters(), lr=0.1, momentum=0.9)
    extra = Checkpointer(restored, str(tmp_path), optimizer=restored_optimizer).load(str(tmp_path / "prefixed.pth"))
    assert extra == {"iteration": 5}
    torch.testing.assert_close(restored.weight, model.weight)
    momentum = restored_optimizer.state[restored.weight]["momentum_buffer"]
    torch.testing.assert_close(momentum, torch.ones(2, 3))


def test_no_checkpoint_and_missing_file(tmp_path):
    checkpointer = Checkpointer(_model(1.0), str(tmp_path))
    assert not checkpointer.has_checkpoint()
    assert checkpointer.resume_or_load("", resume=True) == {}
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        checkpointer.load(str(tmp_path / "nothing.pth"))


def test_mismatched_keys_are_named(tmp_path):
    Checkpointer(_model(1.0), str(tmp_path)).save("model_final")
    other = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(KeyError, match="0.weight"):
        Checkpointer(other, str(tmp_path)).resume_or_load("", resume=True)
