"""tools/analyze_model.py: the paper's FLOPs (Table 1), torchvision's parameter counts, the JSON contract."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from resdet.config import setup_cfg
from resdet.modeling import META_ARCH_REGISTRY

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "analyze_model.py"
analyze = runpy.run_path(str(TOOL))["analyze"]


@pytest.mark.parametrize("depth,paper_gflops", [(18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6), (152, 11.3)])
def test_gflops_match_the_paper(depth, paper_gflops):
    result = analyze(setup_cfg(str(ROOT / "configs" / f"r{depth}_imagenet.yaml"), []))
    assert abs(result["gflops"] - paper_gflops) / paper_gflops < 0.06
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert result["params"] == sum(p.numel() for p in reference.parameters())


def test_json_output_is_one_object():
    out = subprocess.run([sys.executable, str(TOOL), "--config", str(ROOT / "configs" / "r18_imagenet.yaml"), "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    result = json.loads(out)
    assert set(result) == {"params", "gflops"}
    assert isinstance(result["params"], int) and isinstance(result["gflops"], float)


class OneConvDetector(nn.Module):
    """A stand-in detector taking the list-of-dicts batch: one 3x3 conv, 8 channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def forward(self, batch):
        features = self.conv(batch[0]["image"][None])
        return [{"scores": features.mean(dim=(1, 2, 3)), "labels": torch.zeros(1, dtype=torch.int64)}]


def test_detectors_are_measured_on_a_capped_four_by_three_image():
    META_ARCH_REGISTRY.register(OneConvDetector)
    try:
        cfg = setup_cfg("", ["MODEL.META_ARCHITECTURE", "OneConvDetector", "INPUT.MIN_SIZE_TEST", "60",
                             "INPUT.MAX_SIZE_TEST", "72"])
        result = analyze(cfg)
    finally:
        META_ARCH_REGISTRY._obj_map.pop("OneConvDetector")
    # 4:3 at shorter side 60 is 60x80; the cap of 72 makes it 54x72. A 3x3 conv: 27 multiply-adds per output
    assert result["params"] == 8 * 27
    assert result["gflops"] == pytest.approx(54 * 72 * 8 * 27 / 1e9, rel=0.01)
