"""Shared fixtures: a small default config, a temporary output directory, the toy datasets."""
import os

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def cfg():
    """A fresh default config on the CPU."""
    import resdet

    c = resdet.get_cfg()
    c.MODEL.DEVICE = "cpu"
    return c
