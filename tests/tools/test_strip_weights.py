"""tools/convert_weights.py --strip: a training checkpoint becomes its weights and meta only, with a digest that
sha256 confirms; what is not a resdet checkpoint is refused by name."""
import hashlib
import os
import runpy

import pytest
import torch
from torch import nn

from resdet.checkpoint.checkpointer import Checkpointer
from resdet.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tool = runpy.run_path(os.path.join(REPO, "tools", "convert_weights.py"))


def test_strip_keeps_weights_and_meta_only(tmp_path, capsys):
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()  # momentum buffers: a state as large as the weights
    Checkpointer(model, str(tmp_path), meta={"class_names": ["a", "b"]}, optimizer=optimizer).save("model_final",
                                                                                                    iteration=7)
    source, stripped = tmp_path / "model_final.pth", tmp_path / "deploy" / "model.pth"
    assert tool["main"](["--strip", str(source), str(stripped)]) == 0
    assert "dropped iteration, optimizer" in capsys.readouterr().out
    data = torch.load(stripped, weights_only=True)
    assert set(data) == {"model", "meta"} and data["meta"] == {"class_names": ["a", "b"]}
    for name, tensor in model.state_dict().items():
        assert torch.equal(data["model"][name], tensor), name
    assert os.path.getsize(stripped) < 0.6 * os.path.getsize(source)
    recorded = (tmp_path / "deploy" / "model.pth.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(stripped.read_bytes()).hexdigest()


def test_strip_refuses_what_is_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(UsageError, match=r"plain.pth is not a resdet training checkpoint.*\['weight'\]"):
        tool["main"](["--strip", str(path), str(tmp_path / "out.pth")])
    with pytest.raises(UsageError, match="takes no --from"):
        tool["main"](["--strip", "--from", "torchvision", str(path), str(tmp_path / "out.pth")])
