"""Checkpoint writes: a full disk or an I/O error is a clear error and last_checkpoint keeps naming a complete,
loadable file; SOLVER.CHECKPOINT_KEEP removes old checkpoints; files get the usual permissions."""
import errno
import os
import stat

import pytest
import torch
from torch import nn

from resdet.checkpoint.checkpointer import LAST_CHECKPOINT, Checkpointer, CheckpointWriteError
from resdet.engine import ClassificationLoss, Trainer
from resdet.engine.hooks import PeriodicCheckpointer
from resdet.errors import is_user_error


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, value)
    return model


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_previous_intact(directory, name: str, weight: float) -> None:
    assert (directory / LAST_CHECKPOINT).read_text() == name
    assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]  # no partial files left
    restored = _model(0.0)
    Checkpointer(restored, str(directory)).resume_or_load("", resume=True)
    assert torch.all(restored.weight == weight)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _model(1.0)
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_0000010", iteration=10)
    nn.init.constant_(model.weight, 2.0)
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as caught:
        checkpointer.save("model_0000020", iteration=20)
    message = str(caught.value)
    assert "model_0000020.pth" in message and "last_checkpoint still names" in message
    assert "model_0000010.pth" in message and "free some space" in message and "--resume" in message
    assert caught.value.errno == errno.ENOSPC and is_user_error(caught.value)  # a message, not a traceback
    assert not (tmp_path / "model_0000020.pth").exists()
    _assert_previous_intact(tmp_path, "model_0000010.pth", 1.0)


def test_failed_pointer_update_keeps_naming_the_previous_checkpoint(tmp_path, monkeypatch):
    """The new file is complete but last_checkpoint could not be replaced: it still names the previous one."""
    model = _model(1.0)
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_0000010", iteration=10)
    real_replace = os.replace

    def failing_replace(source, target):
        if os.path.basename(target) == LAST_CHECKPOINT:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CheckpointWriteError, match="is writable"):
        checkpointer.save("model_0000020", iteration=20)
    monkeypatch.setattr(os, "replace", real_replace)
    _assert_previous_intact(tmp_path, "model_0000010.pth", 1.0)


def _train(output_dir, max_iter: int, period: int, keep: int = 0) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter([(torch.rand(2, 3, 2, 2), torch.tensor([0, 1]))] * max_iter)
    trainer = Trainer(model, batches, optimizer, ClassificationLoss(torch.device("cpu")))
    trainer.register_hooks([PeriodicCheckpointer(Checkpointer(model, str(output_dir), optimizer=optimizer),
                                                 period, keep)])
    trainer.train(0, max_iter)


def test_write_error_during_training_stops_it_with_the_last_checkpoint_intact(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def fail_second(obj, file):
        calls.append(1)
        if len(calls) == 2:
            _full_disk()
        real_save(obj, file)

    monkeypatch.setattr(torch, "save", fail_second)
    with pytest.raises(CheckpointWriteError, match="model_0000004.pth"):
        _train(tmp_path, max_iter=9, period=2)
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "model_0000002.pth"
    assert torch.load(tmp_path / "model_0000002.pth", weights_only=True)["iteration"] == 2


def test_checkpoint_keep_removes_the_oldest(tmp_path):
    torch.save({}, tmp_path / "model_0000001.pth")  # from an earlier run in the same directory
    _train(tmp_path, max_iter=9, period=2, keep=2)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == \
        ["model_0000006.pth", "model_0000008.pth", "model_final.pth"]
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "model_final.pth"


def test_checkpoint_keep_zero_keeps_all(tmp_path):
    _train(tmp_path, max_iter=7, period=2)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == \
        ["model_0000002.pth", "model_0000004.pth", "model_0000006.pth", "model_final.pth"]


def test_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        Checkpointer(_model(1.0), str(tmp_path)).save("model_final")
    finally:
        os.umask(umask)
    for name in ("model_final.pth", LAST_CHECKPOINT):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
