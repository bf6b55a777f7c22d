"""validate_config refuses impossible values naming key and config file; check_num_classes compares the model's
NUM_CLASSES with the datasets' classes; every shipped recipe passes."""
import argparse
from pathlib import Path

import pytest

from resdet.config import ConfigError, get_cfg, setup_cfg, validate_config
from resdet.engine.defaults import setup_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOY_DET = str(CONFIGS / "toy_frcnn_r18_fpn.yaml")


def training_config(config_file: str, overrides, world_size: int = 1):
    args = argparse.Namespace(config=config_file, opts=list(overrides), eval_only=False)
    return setup_config(args, world_size)


@pytest.mark.parametrize("key,value,needle", [
    ("SOLVER.BASE_LR", "-0.1", "positive"),
    ("SOLVER.BASE_LR", "1e400", "finite"),  # literal_eval reads it as inf
    ("SOLVER.MAX_ITER", "0", "at least 1"),
    ("SOLVER.IMS_PER_BATCH", "0", "at least 1"),
    ("SOLVER.WEIGHT_DECAY", "-1e-4", ">= 0"),
    ("SOLVER.STEPS", "(900, 300)", "increasing"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", "0", "at least 1"),
    ("TEST.COCO_EVAL_BACKEND", "fast", "faster_coco_eval"),
    ("DIST.TIMEOUT", "0", "positive number of seconds"),
])
def test_impossible_value_names_key_and_file(key, value, needle):
    with pytest.raises(ConfigError) as err:
        training_config(TOY_DET, [key, value])
    message = str(err.value)
    assert key in message and "toy_frcnn_r18_fpn.yaml" in message and needle in message
    assert "set on the command line" in message


def test_value_from_the_file_is_blamed_on_the_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(f'_BASE_: "{TOY_DET}"\nSOLVER:\n  BASE_LR: -0.5\n')
    with pytest.raises(ConfigError, match=r"recipe.yaml: SOLVER.BASE_LR is -0.5") as err:
        training_config(str(path), [])
    assert "command line" not in str(err.value)


def test_steps_after_max_iter(tmp_path):
    path = tmp_path / "late.yaml"
    path.write_text(f'_BASE_: "{TOY_DET}"\nSOLVER:\n  MAX_ITER: 1000\n  STEPS: (800, 1200)\n')
    with pytest.raises(ConfigError, match=r"late.yaml: SOLVER.STEPS has \[1200\] after SOLVER.MAX_ITER 1000"):
        training_config(str(path), [])
    with pytest.raises(ConfigError, match="SOLVER.STEPS"):  # both given on the command line: still impossible
        training_config(TOY_DET, ["SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(20,)"])
    # a run shortened on the command line keeps the file's schedule (the scheduler ignores the late steps)
    assert training_config(TOY_DET, ["SOLVER.MAX_ITER", "20"]).SOLVER.MAX_ITER == 20
    # evaluation never reads the solver
    args = argparse.Namespace(config=str(path), opts=[], eval_only=True)
    assert setup_config(args, 1).SOLVER.MAX_ITER == 1000


def test_batch_must_split_over_the_processes():
    with pytest.raises(ConfigError) as err:
        training_config(TOY_DET, ["SOLVER.IMS_PER_BATCH", "4"], world_size=3)
    message = str(err.value)
    assert "SOLVER.IMS_PER_BATCH" in message and "toy_frcnn_r18_fpn.yaml" in message and "3 processes" in message
    assert training_config(TOY_DET, ["SOLVER.IMS_PER_BATCH", "6"], world_size=3).SOLVER.IMS_PER_BATCH == 6


def test_syncbn_needs_cuda_in_a_job_of_several_processes():
    with pytest.raises(ConfigError, match="MODEL.RESNETS.NORM.*SyncBN.*CUDA devices only.*'cpu'"):
        training_config(TOY_DET, ["MODEL.RESNETS.NORM", "SyncBN", "MODEL.DEVICE", "cpu"], world_size=2)
    # one process: SyncBN is plain BN there, on any device
    assert training_config(TOY_DET, ["MODEL.RESNETS.NORM", "SyncBN"], world_size=1).MODEL.RESNETS.NORM == "SyncBN"


def test_a_job_of_several_processes_may_not_name_one_gpu():
    with pytest.raises(ConfigError, match=r"MODEL.DEVICE \(set on the command line\) is 'cuda:1'.*2 processes.*"
                                          r"use MODEL.DEVICE cuda"):
        training_config(TOY_DET, ["MODEL.DEVICE", "cuda:1"], world_size=2)
    args = argparse.Namespace(config=TOY_DET, opts=["MODEL.DEVICE", "cuda:0"], eval_only=True)
    with pytest.raises(ConfigError, match="'cuda:0'"):  # evaluation in several processes too
        setup_config(args, 2)
    # one process may run on any GPU it names (CUDA is not needed to validate)
    assert training_config(TOY_DET, ["MODEL.DEVICE", "cuda:1"], world_size=1).MODEL.DEVICE == "cuda:1"


def test_setup_cfg_checks_the_model_not_the_solver():
    # inference tools (demo, export) read a config whose schedule does not matter
    assert setup_cfg(TOY_DET, ["SOLVER.MAX_ITER", "0"]).SOLVER.MAX_ITER == 0
    with pytest.raises(ConfigError, match="toy_frcnn_r18_fpn.yaml: MODEL.ROI_HEADS.NUM_CLASSES"):
        setup_cfg(TOY_DET, ["MODEL.ROI_HEADS.NUM_CLASSES", "0"])


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("SOLVER:\n  STEPS: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        get_cfg().merge_from_file(str(path))


def test_every_shipped_config_is_valid_for_training():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) >= 25
    for path in files:
        cfg = get_cfg()
        cfg.merge_from_file(str(path))
        validate_config(cfg, str(path), training=True)


def test_num_classes_must_match_the_datasets(toy_datasets, monkeypatch):
    from resdet.data.class_count import check_num_classes

    monkeypatch.setenv("RESDET_DATASETS", str(toy_datasets))
    detector = setup_cfg(TOY_DET, [])
    check_num_classes(detector, ["toy_coco_train", "toy_voc_test"], TOY_DET)
    wrong = setup_cfg(TOY_DET, ["MODEL.ROI_HEADS.NUM_CLASSES", "80"])
    with pytest.raises(ConfigError) as err:
        check_num_classes(wrong, ["toy_coco_train"], TOY_DET)
    message = str(err.value)
    assert all(part in message for part in ("toy_frcnn_r18_fpn.yaml", "MODEL.ROI_HEADS.NUM_CLASSES is 80",
                                            "'toy_coco_train' has 4 classes", "circle"))
    classifier = setup_cfg(str(CONFIGS / "toy_cls_r18.yaml"), ["MODEL.CLASSIFIER.NUM_CLASSES", "1000"])
    with pytest.raises(ConfigError, match=r"MODEL.CLASSIFIER.NUM_CLASSES is 1000 but dataset 'toy_cls_val' has 10"):
        check_num_classes(classifier, ["toy_cls_val"], "toy_cls_r18.yaml")
