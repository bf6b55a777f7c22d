"""Every shipped config (configs/**/*.yaml but Base-*) is spawn-safe and trains and evaluates on two processes.

Why: loader workers started by `spawn` (macOS and Windows, or DATALOADER.START_METHOD spawn) and the ranks of
`--num-gpus N` (always spawn) receive what they run by pickling: a loader's dataset (its records and mapper),
sampler, batch sampler, collate_fn and worker_init_fn, and the evaluators. A lambda or a local function anywhere in
there works under Linux's fork and fails on the user's Mac (as the colour tests' hue shift once did).

Data (tests/tools/every_config_setup.py): a RESDET_DATASETS root with a set of each format the configs name, made
from the toy shapes (real boxes and classes): `toy/` (toy_coco_*, toy_cls_*: COCO-format detection and ImageFolder
classification; part 1 links conftest's `toy_datasets`, part 2 a small toy world, so that its evaluations test a few
images), `coco/` (coco_2017_*: toy scenes under COCO's 80 category ids and names), `VOC2007/`, `VOC2012/` (voc_*:
the toy devkit, its classes renamed to VOC ones), `imagenet/` (imagenet_*: 1000 class folders, the first holding toy
images), `cifar10/` (conftest's `cifar10_root`). A detector config without datasets (torchvision/frcnn_r50_fpn.yaml)
gets `coco:<json>: <images>` sets of its NUM_CLASSES categories on the command line, as its users would give. A
config naming another kind of dataset fails `dataset_format` with the name to add.

Part 1, every config (`test_config_pickles`): set up as the tools do (`setup_config`, tiny overrides,
`DATALOADER.NUM_WORKERS 1 DATALOADER.START_METHOD spawn`), its train loader, test loader(s) and evaluator(s) built by
the tools' own calls (tools/train_cls.py `build_test_loaders`, `build_classification_train_loader`,
`ClassificationEvaluator()` as its `evaluate` makes it; tools/train_det.py `check_datasets`,
`build_detection_test_loader`, `build_detection_train_loader`, `build_evaluator`). Each loader's dataset, sampler,
batch sampler (and its sampler), collate_fn and worker_init_fn and each evaluator go through pickle.dumps/loads; the
unpickled dataset must map the first sample as the original does, the unpickled evaluator must still evaluate.
`test_one_spawned_batch_per_format`: the first training batch of one config per format (toy detection, COCO, VOC,
ImageFolder, CIFAR, toy classification) from a spawn-started worker equals the batch the main process maps itself.
`test_the_check_refuses_a_lambda` is the negative control. `test_skip_corrupt_with_spawned_workers` covers a key no
shipped config sets: DATALOADER.SKIP_CORRUPT's shared counters could not reach spawn-started workers (fixed in
resdet/data/skip_corrupt.py and build.py: they are made in the workers' multiprocessing context).

Part 2: the configs train (2 iterations) and evaluate on two processes started by spawn, as `--num-gpus 2` starts
them: both ranks log (log.txt, log.txt.rank1) their training, the losses are finite, the final evaluation writes its
metrics (eval/results.json). Tiny inputs, a quarter of the channel widths, lr at most 0.01, zero-initialised branch
ends for random FrozenBN trunks (`config_overrides`); depth, blocks, shortcuts, norms, C4/FPN, poolers and the rest of
what tells the configs apart stay.
Budget: a spawn-started worker imports torch and resdet (~2.5 s of CPU) and a command-line run adds three
interpreters (~8 s), so spawned workers are started where they tell something new: `test_one_spawned_batch_per_format`
(each data format's training loader) and two command-line runs; the pickling test checks everything else a worker
would receive, for every config.
- `test_cli_two_processes`: the real tool on the command line, `--num-gpus 2 DATALOADER.NUM_WORKERS 1
  DATALOADER.START_METHOD spawn`: tools/train_cls.py on configs/toy_cls_r18.yaml (its colour tests: three test
  loaders per rank). There the ranks and workers also re-import the tool's script (spawn imports the parent's
  __main__). tools/train_det.py gets the same in tests/tools/test_shared_records.py (spawn-started workers).
- `test_remaining_configs_in_one_job`: every other config in one two-process job (tests/tools/every_config_driver.py:
  resdet.engine.launch, then the tools' `main` for each config, each with its own OUTPUT_DIR), loading in the ranks
  (NUM_WORKERS 0): every model (plain and residual, basic and bottleneck, shortcut options A and B, BN and FrozenBN,
  C4 and FPN, RoIPool and RoIAlign, ResNet-1202, R152) trains and evaluates on two ranks.
"""
import argparse
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from typing import Dict, List

import numpy as np
import pytest
import torch
import yaml
from every_config_setup import (  # tests/tools is on sys.path: pytest's rootdir import
    CONFIGS,
    REPO,
    config_format,
    config_overrides,
    data_path,
    file_config,
    is_detector,
    make_datasets_root,
)
from test_own_data import SMALL  # a small toy world's sizes (tests/tools is on sys.path: pytest rootdir import)
from torch.utils.data import DataLoader

from resdet.data import (
    build_classification_train_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    make_toy_data,
)
from resdet.data.build import MapDataset, collate_list, worker_context
from resdet.data.class_count import check_num_classes
from resdet.data.mappers import DetectionTestMapper
from resdet.engine import setup_config
from resdet.evaluation import ClassificationEvaluator

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "every_config_driver.py")
FORMATS = ("toy detection", "COCO", "VOC", "ImageFolder", "CIFAR", "toy classification")
SPAWN = ["DATALOADER.NUM_WORKERS", "1", "DATALOADER.START_METHOD", "spawn"]
IN_PROCESS = ["DATALOADER.NUM_WORKERS", "0"]


def load_tool(name: str):
    """tools/<name>.py as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN_CLS, TRAIN_DET = load_tool("train_cls"), load_tool("train_det")


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory) -> str:
    """A small toy world (test_own_data's sizes: 10 + 10 classification images, 12 + 6 scenes), the source of the
    COCO, VOC and ImageFolder sets and part 2's toy/."""
    return make_toy_data(str(tmp_path_factory.mktemp("small_toy")), seed=0, **SMALL)


@pytest.fixture(scope="module")
def full_root(tmp_path_factory, toy_datasets, small_toy, cifar10_root) -> str:
    """Part 1's root: the embedded toy sets themselves (conftest's toy_datasets) and the other formats."""
    return make_datasets_root(str(tmp_path_factory.mktemp("full") / "datasets"), str(toy_datasets / "toy"),
                              small_toy, str(cifar10_root))


@pytest.fixture(scope="module")
def small_root(tmp_path_factory, small_toy, cifar10_root) -> str:
    """Part 2's root: the small toy world as toy/, so that the final evaluations test a few images only."""
    return make_datasets_root(str(tmp_path_factory.mktemp("small") / "datasets"), small_toy, small_toy,
                              str(cifar10_root))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """RESDET_CACHE of every run here: no record-store files beside the shared fixtures' data."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def datasets_env(full_root, cache_dir, monkeypatch) -> str:
    monkeypatch.setenv("RESDET_DATASETS", full_root)
    monkeypatch.setenv("RESDET_CACHE", cache_dir)
    return full_root


def tool_args(config: str, opts: List[str]) -> argparse.Namespace:
    """The Namespace tools/train_*.py get from their parser for `--config config opts`."""
    return TRAIN_CLS.default_argument_parser().parse_args(["--config", config, *opts])


# ---------------------------------------------------------------- part 1: pickling


def round_trip(obj, what: str):
    """pickle.loads(pickle.dumps(obj)): what a spawn-started process receives of `obj`; AssertionError naming `what`
    when it cannot be pickled."""
    try:
        return pickle.loads(pickle.dumps(obj))
    except Exception as err:  # PicklingError, AttributeError ("Can't pickle local object"), TypeError, ...
        raise AssertionError(f"{what} ({type(obj).__name__}) cannot be pickled, so a process started by spawn "
                             f"cannot receive it: {type(err).__name__}: {err}") from err


def assert_same(a, b, where: str = "sample") -> None:
    """Equal nested tensors, arrays, lists, tuples, dicts and plain values."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def check_loader(loader, what: str) -> None:
    """Everything `loader` (a DataLoader or the training InfiniteLoader) gives its workers, or keeps to drive them,
    survives pickling, and the unpickled dataset maps its first sample as the original does."""
    loader = getattr(loader, "loader", loader)
    assert loader.multiprocessing_context.get_start_method() == "spawn", what
    parts = {"dataset": loader.dataset, "sampler": loader.sampler, "batch_sampler": loader.batch_sampler,
             "batch_sampler.sampler": loader.batch_sampler.sampler, "collate_fn": loader.collate_fn,
             "worker_init_fn": loader.worker_init_fn}
    copies = {name: round_trip(part, f"{what}: {name}") for name, part in parts.items()}
    key = next(iter(loader.batch_sampler))[0]  # SampleKey(index, epoch) in training, an index in testing
    assert_same(copies["dataset"][key], loader.dataset[key], f"{what}: first sample after pickling")


def build_as_tools_do(cfg, args):
    """(train loader, {test name: loader}, {test name: evaluator}) built by the calls tools/train_cls.py or
    tools/train_det.py make (the test loaders first, as there)."""
    if not is_detector(cfg):
        test_loaders = TRAIN_CLS.build_test_loaders(cfg)  # {(dataset, colour test): loader}
        train_loader = build_classification_train_loader(cfg)
        check_num_classes(cfg, tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST), args.config)
        evaluators = {key: ClassificationEvaluator() for key in test_loaders}  # as train_cls.evaluate makes them
        return train_loader, test_loaders, evaluators
    TRAIN_DET.check_datasets(cfg, False, args.config)
    test_loaders = {name: build_detection_test_loader(cfg, name) for name in cfg.DATASETS.TEST}
    train_loader = build_detection_train_loader(cfg)
    evaluators = {name: TRAIN_DET.build_evaluator(cfg, name, cfg.OUTPUT_DIR) for name in cfg.DATASETS.TEST}
    return train_loader, test_loaders, evaluators


def spawn_setup(config: str, root: str, output_dir: str):
    """(cfg, args) of `config` with tiny sizes and one spawn-started loader worker, as the tools set it up."""
    args = tool_args(os.path.join(REPO, config), config_overrides(config, root) + SPAWN + ["OUTPUT_DIR", output_dir])
    return setup_config(args), args


def test_every_format_is_covered():
    """The configs name data of every format made here (a new format needs its own set in the root)."""
    assert {config_format(config) for config in CONFIGS} == set(FORMATS)
    assert len(CONFIGS) >= 31 and not any(os.path.basename(c).startswith("Base-") for c in CONFIGS)


# data_path -> (the first config of it tested, the pickles of what its loaders hold and its evaluators' kind)
BUILT_BY_DATA_PATH: Dict[str, tuple] = {}


@pytest.mark.parametrize("config", CONFIGS)
def test_config_pickles(config, datasets_env, tmp_path):
    """What `config`'s loaders give their workers, and its evaluators, survive pickling and still work; configs of
    one data path build the same bytes."""
    cfg, args = spawn_setup(config, datasets_env, str(tmp_path))
    train_loader, test_loaders, evaluators = build_as_tools_do(cfg, args)
    assert test_loaders and evaluators.keys() == test_loaders.keys()
    built = pickle.dumps([[(loader.dataset, loader.batch_sampler, loader.collate_fn)
                           for loader in [train_loader.loader, *test_loaders.values()]],
                          [(type(e), getattr(e, "dataset_name", None)) for e in evaluators.values()]])
    first, first_built = BUILT_BY_DATA_PATH.setdefault(data_path(config), (config, built))
    assert built == first_built, f"{config} and {first} have one data_path but build different loaders"
    check_loader(train_loader, f"{config}: training loader")
    for name, loader in test_loaders.items():
        check_loader(loader, f"{config}: test loader {name}")
    for name, evaluator in evaluators.items():
        check_evaluator(round_trip(evaluator, f"{config}: evaluator of {name}"), test_loaders[name], cfg)


def check_evaluator(evaluator, test_loader, cfg) -> None:
    """The unpickled evaluator still works: one prediction for the first test batch, then its metrics."""
    evaluator.reset()
    if isinstance(evaluator, ClassificationEvaluator):
        labels = torch.tensor([test_loader.dataset.records[0]["label"]])
        evaluator.process(labels, torch.nn.functional.one_hot(labels, cfg.MODEL.CLASSIFIER.NUM_CLASSES).float())
        assert evaluator.evaluate()["top1"] == 100.0
        return
    record = test_loader.dataset.records[0]
    annotation = record["annotations"][0]
    evaluator.process([{"image_id": record["image_id"]}],
                      [{"boxes": torch.tensor([annotation["bbox"]], dtype=torch.float32),
                        "scores": torch.tensor([0.9]), "labels": torch.tensor([annotation["category_id"]])}])
    results = evaluator.evaluate()
    assert set(results) <= {"bbox", "voc"} and len(results) == 1, results


def test_one_spawned_batch_per_format(datasets_env, tmp_path):
    """For the first config of each data format: the first training batch from a spawn-started worker equals the one
    the main process maps itself. The six workers start together (each imports torch and resdet anew)."""
    chosen: Dict[str, str] = {}
    for config in CONFIGS:
        chosen.setdefault(config_format(config), config)
    assert set(chosen) == set(FORMATS)
    loaders = {}
    for kind, config in chosen.items():
        cfg, _ = spawn_setup(config, datasets_env, str(tmp_path / kind.replace(" ", "_")))
        build = build_detection_train_loader if is_detector(cfg) else build_classification_train_loader
        loaders[kind] = build(cfg).loader  # the DataLoader inside the InfiniteLoader
    iterators = {kind: iter(loader) for kind, loader in loaders.items()}  # each starts its worker now
    try:
        for kind, iterator in iterators.items():
            batch = next(iterator)
            (worker,) = iterator._workers
            assert type(worker).__name__ == "SpawnProcess" and worker.pid != os.getpid(), (chosen[kind], worker)
            loader = loaders[kind]
            keys = next(iter(loader.batch_sampler))
            assert_same(batch, loader.collate_fn([loader.dataset[key] for key in keys]), f"{chosen[kind]}: batch")
    finally:
        for iterator in iterators.values():
            iterator._shutdown_workers()


class LambdaMapper(DetectionTestMapper):
    """The test mapper holding a lambda: a module-level class, so that only the lambda stops pickling."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.flip = lambda image: image.flip(-1)


@pytest.mark.filterwarnings("ignore:Got pickle error when attempting to start a worker")
def test_the_check_refuses_a_lambda(datasets_env, tmp_path):
    """Negative control: the helpers above fail on a mapper holding a lambda (and on a local function), naming it;
    and on the same loader with a picklable mapper they pass."""
    cfg, _ = spawn_setup("configs/toy_frcnn_r18_fpn.yaml", datasets_env, str(tmp_path))
    images = os.path.join(datasets_env, "toy", "coco", "val")
    records = [{"file_name": os.path.join(images, sorted(os.listdir(images))[0]), "image_id": 1}]

    def local_mapper(record, rng=None):
        return record

    def loader_of(mapper):
        return DataLoader(MapDataset(records, mapper), batch_size=1, num_workers=1, collate_fn=collate_list,
                          multiprocessing_context=worker_context(cfg))

    check_loader(loader_of(DetectionTestMapper(cfg)), "picklable mapper")
    with pytest.raises(AssertionError, match=r"lambda mapper: dataset \(MapDataset\) cannot be pickled.*lambda"):
        check_loader(loader_of(LambdaMapper(cfg)), "lambda mapper")
    # and a spawn-started worker cannot get it either (pickled in this process before the worker starts)
    with pytest.raises((AttributeError, pickle.PicklingError), match="lambda"):
        next(iter(loader_of(LambdaMapper(cfg))))
    with pytest.raises(AssertionError, match=r"local mapper: dataset .*local_mapper"):
        check_loader(loader_of(local_mapper), "local mapper")


def test_skip_corrupt_with_spawned_workers(small_toy, cache_dir, tmp_path, monkeypatch):
    """DATALOADER.SKIP_CORRUPT with spawn-started workers: the skipper's shared flags and counter reach the worker,
    and what it skipped shows in this process. They used to be made in the default (fork) context, and the first
    batch failed: "A SemLock created in a fork context is being shared with a process in a spawn context"."""
    monkeypatch.setenv("RESDET_CACHE", cache_dir)
    with open(os.path.join(small_toy, "coco", "annotations", "instances_train.json")) as file:
        data = json.load(file)
    data["images"] = data["images"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {i["id"] for i in data["images"]}]
    (tmp_path / "images").mkdir()
    for image in data["images"]:
        shutil.copy(os.path.join(small_toy, "coco", "train", image["file_name"]), tmp_path / "images")
    corrupt, readable = (str(tmp_path / "images" / image["file_name"]) for image in data["images"])
    with open(corrupt, "wb") as file:
        file.write(b"not a JPEG")
    with open(tmp_path / "two.json", "w") as file:
        json.dump(data, file)
    cfg, _ = spawn_setup("configs/toy_frcnn_r18_fpn.yaml", "<unused>", str(tmp_path / "out"))
    cfg.defrost()
    cfg.DATASETS.TRAIN = (f"coco:{tmp_path / 'two.json'}:{tmp_path / 'images'}",)
    cfg.DATALOADER.SKIP_CORRUPT, cfg.DATALOADER.ASPECT_RATIO_GROUPING = True, False  # both images in batch 1
    loader = build_detection_train_loader(cfg)
    try:
        batch = next(loader)
        assert [sample["file_name"] for sample in batch] == [readable, readable]
        assert loader.dataset.skipper.unreadable_files() == [corrupt]
        assert loader.dataset.skipper.replaced_samples() >= 1
    finally:
        if loader._iterator is not None:
            loader._iterator._shutdown_workers()


# ---------------------------------------------------------------- part 2: two processes, spawn-started workers

# The real tools on the command line, one per tool: the ranks and their workers then re-import the tool's own script
# (spawn imports the parent's __main__), which the driver's job does not.
CLI_RUNS = {
    "configs/toy_cls_r18.yaml": "train_cls: colour tests (the hue shift was once a lambda), 3 test loaders per rank",
}
# Features beyond a config's own keys, exercised in two processes where they apply: the best checkpoint (both tools),
# detection test-time augmentation and proposal recall (COCO-format detection)
FEATURES = {
    "configs/toy_cls_r18.yaml": ["TEST.BEST_METRIC", "top1"],
    "configs/toy_frcnn_r18_fpn.yaml": ["TEST.BEST_METRIC", "bbox/AP50", "TEST.AUG.ENABLED", "True",
                                       "TEST.AUG.MIN_SIZES", "(64,)", "TEST.AUG.MAX_SIZE", "96",
                                       "TEST.EVAL_PROPOSALS", "True"],
}


def tool_of(config: str) -> str:
    return "train_det" if is_detector(file_config(config)) else "train_cls"


def run_argv(config: str, root: str, output_dir: str, workers: List[str]) -> List[str]:
    """A tool's command line for `config`: tiny sizes, the loader `workers` options, its own OUTPUT_DIR."""
    return ["--config", config, *config_overrides(config, root), *workers, *FEATURES.get(config, []),
            "OUTPUT_DIR", output_dir]


def run_env(root: str, cache: str) -> Dict[str, str]:
    return dict(os.environ, RESDET_DATASETS=root, RESDET_CACHE=cache, OMP_NUM_THREADS="1")


def check_trained_and_evaluated(config: str, output_dir: str, workers: List[str]) -> None:
    """Both ranks trained, the loaders had the `workers` options, and the final evaluation wrote its metrics."""
    for log, rank in (("log.txt", 0), ("log.txt.rank1", 1)):
        path = os.path.join(output_dir, log)
        assert os.path.isfile(path), f"{config}: no {log}"
        text = open(path).read()
        assert f"rank {rank} of 2" in text and "training from iteration 0 to 2" in text, f"{config}: {log}"
    with open(os.path.join(output_dir, "config.yaml")) as file:
        saved = yaml.safe_load(file)["DATALOADER"]
    for key, value in zip(workers[0::2], workers[1::2]):
        assert str(saved[key.split(".")[1]]) == value, f"{config}: {key} in its config.yaml"
    assert os.path.isfile(os.path.join(output_dir, "model_final.pth")), config
    with open(os.path.join(output_dir, "metrics.json")) as file:
        losses = [json.loads(line)["total_loss"] for line in file if "total_loss" in line]
    assert losses and all(np.isfinite(losses)), f"{config}: losses {losses}"
    with open(os.path.join(output_dir, "eval", "results.json")) as file:
        results = json.load(file)
    cfg = file_config(config)
    if not is_detector(cfg):
        tests = ["", *(f"_{test}" for test in cfg.TEST.CLS_COLOUR_TESTS)]
        assert set(results) == {f"top{k}{test}" for k in (1, 5) for test in tests}, (config, results)
        assert all(0 <= results[f"top1{test}"] <= results[f"top5{test}"] <= 100 for test in tests), (config, results)
    elif config_format(config) == "VOC":
        assert set(results) == {"voc"} and 0 <= results["voc"]["AP50_07"] <= 100, (config, results)
    else:
        # the six COCO metrics and one AP-<class> per category (None where a category has no box in the small set)
        names = set(results["bbox"]) - {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert len(results["bbox"]) - len(names) == 6 and names, (config, results)
        assert all(name.startswith("AP-") and (value is None or 0 <= value <= 100)
                   for name, value in results["bbox"].items() if name in names), (config, results)
    check_features(config, output_dir, results)


def check_features(config: str, output_dir: str, results: dict) -> None:
    """What FEATURES asked for: model_best.pth with its metric in the meta, proposal recall, and TTA in the log."""
    opts = dict(zip(FEATURES.get(config, [])[0::2], FEATURES.get(config, [])[1::2]))
    if "TEST.BEST_METRIC" in opts:
        meta = torch.load(os.path.join(output_dir, "model_best.pth"), weights_only=True)["meta"]
        section, _, name = opts["TEST.BEST_METRIC"].rpartition("/")
        assert meta["best_metric"] == opts["TEST.BEST_METRIC"] and meta["best_iteration"] == 2, (config, meta)
        assert meta["best_value"] == pytest.approx((results[section] if section else results)[name]), (config, meta)
    if opts.get("TEST.EVAL_PROPOSALS") == "True":
        recall = results["box_proposals"]
        assert set(recall) == {f"AR{s}@{n}" for n in (100, 1000) for s in ("", "s", "m", "l")}, (config, recall)
        assert 0 <= recall["AR@100"] <= recall["AR@1000"] <= 100, (config, recall)


@pytest.mark.parametrize("config", sorted(CLI_RUNS))
def test_cli_two_processes(config, small_root, cache_dir, tmp_path):
    output_dir = str(tmp_path / "out")
    command = [sys.executable, os.path.join("tools", f"{tool_of(config)}.py"), "--num-gpus", "2",
               *run_argv(config, small_root, output_dir, SPAWN)]
    result = subprocess.run(command, cwd=REPO, env=run_env(small_root, cache_dir), capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, f"{config} ({CLI_RUNS[config]}):\n{result.stderr[-4000:]}"
    check_trained_and_evaluated(config, output_dir, SPAWN)


def test_remaining_configs_in_one_job(small_root, cache_dir, tmp_path):
    remaining = [config for config in CONFIGS if config not in CLI_RUNS]
    jobs = [{"tool": tool_of(config),
             "argv": run_argv(config, small_root, str(tmp_path / config.replace("/", "_")), IN_PROCESS)}
            for config in remaining]
    with open(tmp_path / "jobs.json", "w") as file:
        json.dump(jobs, file)
    result = subprocess.run([sys.executable, DRIVER, str(tmp_path / "jobs.json")], cwd=REPO,
                            env=run_env(small_root, cache_dir), capture_output=True, text=True, timeout=600)
    started = [line.split()[-1] for line in result.stderr.splitlines() if line.startswith("every_config_driver:")]
    assert result.returncode == 0, f"failed in {started[-1:]}:\n{result.stderr[-6000:]}"
    assert started == remaining
    for config in remaining:
        check_trained_and_evaluated(config, str(tmp_path / config.replace("/", "_")), IN_PROCESS)
