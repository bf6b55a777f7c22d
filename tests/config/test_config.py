"""Config files: unknown keys and wrong types name key and file, _BASE_ merging, overrides, shipped recipes."""
from pathlib import Path

import pytest

from resdet.config import ConfigError, get_cfg, setup_cfg

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "MODEL:\n  RESNETS:\n    DEPHT: 50\n")
    with pytest.raises(ConfigError) as err:
        get_cfg().merge_from_file(path)
    assert "DEPHT" in str(err.value) and "bad.yaml" in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path):
    path = write(tmp_path / "typo.yaml", "MODEL:\n  RESNETS:\n    DEPTH: fifty\n")
    with pytest.raises(ConfigError) as err:
        get_cfg().merge_from_file(path)
    assert "MODEL.RESNETS.DEPTH" in str(err.value) and "typo.yaml" in str(err.value)


def test_base_merge_child_overrides_base(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "Base.yaml", "MODEL:\n  RESNETS:\n    DEPTH: 101\n    SHORTCUT: C\nSOLVER:\n  BASE_LR: 0.5\n")
    child = write(tmp_path / "sub" / "child.yaml", '_BASE_: "../Base.yaml"\nSOLVER:\n  BASE_LR: 0.2\n')
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.SHORTCUT, cfg.SOLVER.BASE_LR) == (101, "C", 0.2)


def test_overrides_apply_after_file_and_reject_unknown_keys():
    cfg = setup_cfg(str(CONFIGS / "r50_imagenet.yaml"), ["MODEL.RESNETS.DEPTH", "101", "SOLVER.STEPS", "(10, 20)"])
    assert cfg.MODEL.RESNETS.DEPTH == 101 and tuple(cfg.SOLVER.STEPS) == (10, 20)
    with pytest.raises(ConfigError, match="MODEL.NOPE"):
        setup_cfg("", ["MODEL.NOPE", "1"])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        setup_cfg("", ["MODEL.RESNETS.DEPTH"])


def test_every_shipped_config_loads():
    files = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name in ("configs", "cifar"))
    assert len(files) >= 20
    for path in files:
        setup_cfg(str(path), [])


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_recipe(depth):
    cfg = setup_cfg(str(CONFIGS / f"r{depth}_imagenet.yaml"), [])
    r, s = cfg.MODEL.RESNETS, cfg.SOLVER
    assert (r.DEPTH, r.SHORTCUT, r.STRIDE_IN_1X1, r.RESIDUAL) == (depth, "B", True, True)
    assert cfg.INPUT.FORMAT == "BGR" and list(cfg.MODEL.PIXEL_MEAN) == [103.53, 116.28, 123.675]
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.WEIGHT_DECAY, s.MOMENTUM, s.MAX_ITER) == (256, 0.1, 1e-4, 0.9, 600000)
    assert cfg.INPUT.CROP.SIZE == 224 and cfg.MODEL.CLASSIFIER.NUM_CLASSES == 1000


@pytest.mark.parametrize("name,layers,residual", [
    ("resnet20", 20, True), ("resnet32", 32, True), ("resnet44", 44, True), ("resnet56", 56, True),
    ("resnet110", 110, True), ("resnet1202", 1202, True), ("plain20", 20, False), ("plain110", 110, False)])
def test_cifar_recipe(name, layers, residual):
    cfg = setup_cfg(str(CONFIGS / "cifar" / f"{name}.yaml"), [])
    assert 6 * cfg.MODEL.CIFAR_RESNET.N + 2 == layers  # section 4.2: 6n+2 weighted layers
    assert cfg.MODEL.RESNETS.RESIDUAL == residual and cfg.MODEL.RESNETS.SHORTCUT == "A"
    assert (cfg.SOLVER.IMS_PER_BATCH, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER) == (128, (32000, 48000), 64000)
    assert cfg.INPUT.CROP.SIZE == 32 and cfg.MODEL.CLASSIFIER.NUM_CLASSES == 10


def test_resnet110_warms_up_at_a_tenth_of_the_rate():
    s = setup_cfg(str(CONFIGS / "cifar" / "resnet110.yaml"), []).SOLVER
    assert (s.WARMUP_METHOD, s.WARMUP_FACTOR * s.BASE_LR, s.WARMUP_ITERS) == ("constant", pytest.approx(0.01), 400)
