"""What tests/tools/test_every_config.py builds its runs from: a set of each data format the shipped configs name,
made from the toy shapes, and each config's datasets, tiny overrides and data path."""
import functools
import json
import os
import shutil
from typing import List

from resdet.config import get_cfg
from resdet.data.datasets.coco import COCO_CATEGORY_IDS, COCO_CLASSES
from resdet.data.datasets.voc import VOC_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs")
# every shipped config: a new one is picked up by the tests
CONFIGS = sorted(os.path.relpath(os.path.join(folder, name), REPO)
                 for folder, _, names in os.walk(CONFIG_DIR) for name in names
                 if name.endswith(".yaml") and not name.startswith("Base-"))




# ---------------------------------------------------------------- data of every format, from the toy shapes


def write_coco_format(toy: str, out: str, category_ids: List[int], names: List[str], json_name: str,
                      image_folder: str) -> None:
    """out/annotations/<json_name % split>, out/<image_folder % split>: the toy scenes with their four classes
    spread over `category_ids` (the other categories have no boxes, as rare classes of a real set)."""
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    for split in ("train", "val"):
        with open(os.path.join(toy, "coco", "annotations", f"instances_{split}.json")) as file:
            data = json.load(file)
        toy_ids = sorted(category["id"] for category in data["categories"])
        new_id = {old: category_ids[k * len(category_ids) // len(toy_ids)] for k, old in enumerate(toy_ids)}
        for annotation in data["annotations"]:
            annotation["category_id"] = new_id[annotation["category_id"]]
        data["categories"] = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(category_ids, names)]
        with open(os.path.join(out, "annotations", json_name % split), "w") as file:
            json.dump(data, file)
        os.symlink(os.path.join(toy, "coco", split), os.path.join(out, image_folder % split))


def write_voc_format(toy: str, root: str) -> None:
    """VOC2007 (trainval, test) and VOC2012 (trainval) devkits of the toy scenes, toy classes renamed to VOC ones."""
    source = os.path.join(toy, "voc", "VOC2007")
    renamed = {f"<name>{toy_class}</name>": f"<name>{VOC_CLASSES[3 * k]}</name>"
               for k, toy_class in enumerate(open(os.path.join(source, "labels.txt")).read().split())}
    for year, splits in ((2007, ("trainval", "test")), (2012, ("trainval",))):
        devkit = os.path.join(root, f"VOC{year}")
        os.makedirs(os.path.join(devkit, "Annotations"))
        os.makedirs(os.path.join(devkit, "ImageSets", "Main"))
        os.symlink(os.path.join(source, "JPEGImages"), os.path.join(devkit, "JPEGImages"))
        for name in os.listdir(os.path.join(source, "Annotations")):
            text = open(os.path.join(source, "Annotations", name)).read()
            for old, new in renamed.items():
                text = text.replace(old, new)
            with open(os.path.join(devkit, "Annotations", name), "w") as file:
                file.write(text)
        for split in splits:
            shutil.copy(os.path.join(source, "ImageSets", "Main", f"{split}.txt"),
                        os.path.join(devkit, "ImageSets", "Main", f"{split}.txt"))


def write_image_folder_format(toy: str, out: str, num_classes: int = 1000) -> None:
    """out/{train,val}/<wnid>/ for `num_classes` classes (ImageNet's 1000); the toy images fill the first folders."""
    for split in ("train", "val"):
        images = sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(toy, "cls", split))
                        for name in names)
        for label in range(num_classes):
            os.makedirs(os.path.join(out, split, f"n{label:08d}"))
        for k, image in enumerate(images):
            os.symlink(image, os.path.join(out, split, f"n{k:08d}", os.path.basename(image)))


def make_datasets_root(root: str, toy: str, small_toy: str, cifar_root: str) -> str:
    """A RESDET_DATASETS root: toy/ -> `toy`, the COCO, VOC and ImageNet sets from `small_toy`, cifar10/, and
    coco_<C>_classes/ for each detector config without datasets (`coco_spec_datasets`)."""
    os.makedirs(root)
    os.symlink(toy, os.path.join(root, "toy"))
    os.symlink(os.path.join(cifar_root, "cifar10"), os.path.join(root, "cifar10"))
    write_coco_format(small_toy, os.path.join(root, "coco"), COCO_CATEGORY_IDS, COCO_CLASSES, "instances_%s2017.json",
                      "%s2017")
    write_voc_format(small_toy, root)
    write_image_folder_format(small_toy, os.path.join(root, "imagenet"))
    for num_classes in sorted({cfg.MODEL.ROI_HEADS.NUM_CLASSES for cfg in map(file_config, CONFIGS)
                               if is_detector(cfg) and not cfg.DATASETS.TRAIN}):
        ids = list(range(1, num_classes + 1))
        write_coco_format(small_toy, os.path.join(root, f"coco_{num_classes}_classes"), ids,
                          [f"class_{i}" for i in ids], "instances_%s.json", "%s")
    return root


# ---------------------------------------------------------------- a config's data and overrides


@functools.lru_cache(maxsize=None)
def _read_config(config: str):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, config))
    return cfg


def file_config(config: str):
    """The config as its file sets it (defaults, _BASE_ chain, the file); a copy of its own."""
    return _read_config(config).clone()


def dataset_format(name: str) -> str:
    """Which of FORMATS a dataset name of a config is (the root above has a set of each)."""
    for prefix, kind in (("toy_coco_", "toy detection"), ("coco_", "COCO"), ("coco:", "COCO"), ("voc_", "VOC"),
                         ("imagenet_", "ImageFolder"), ("cifar10_", "CIFAR"), ("toy_cls_", "toy classification")):
        if name.startswith(prefix):
            return kind
    raise AssertionError(f"dataset {name!r}: no test data of its kind; add it to dataset_format and the root")


def is_detector(cfg) -> bool:
    return cfg.MODEL.META_ARCHITECTURE != "Classifier"


def config_format(config: str) -> str:
    """The data format a config trains on (the one of its first training set; a detector without datasets: COCO)."""
    cfg = file_config(config)
    if not cfg.DATASETS.TRAIN:
        assert is_detector(cfg), f"{config}: a classifier without DATASETS; give it a set in config_overrides"
        return "COCO"
    return dataset_format(cfg.DATASETS.TRAIN[0])


def coco_spec_datasets(root: str, num_classes: int) -> List[str]:
    """DATASETS.TRAIN and TEST overrides naming the `coco:` sets of `num_classes` categories (ids 1..C) in `root`:
    what a user of a config without datasets passes on the command line."""
    out = os.path.join(root, f"coco_{num_classes}_classes")
    spec = {split: f"coco:{out}/annotations/instances_{split}.json:{out}/{split}" for split in ("train", "val")}
    return ["DATASETS.TRAIN", f"('{spec['train']}',)", "DATASETS.TEST", f"('{spec['val']}',)"]


def config_overrides(config: str, root: str) -> List[str]:
    """Tiny inputs, widths and schedule for `config`, and its datasets where the file names none.

    What makes a config what it is stays: depth, block, plain or residual, shortcut option, norm, stride placement,
    C4 or FPN, poolers, anchors, input format, pixel statistics, optimizer, AMP, schedule kind, datasets. The channel
    widths shrink fourfold (a sixteenth of the work and weights), as the inputs do; the lr is at most 0.01.
    """
    cfg = file_config(config)
    opts = ["SEED", "0", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.EVAL_PERIOD", "0",
            "SOLVER.BASE_LR", str(min(cfg.SOLVER.BASE_LR, 0.01))]  # random weights, two images a process: no jumps
    if cfg.MODEL.BACKBONE.NAME == "build_cifar_resnet_backbone":
        opts += ["MODEL.CIFAR_RESNET.WIDTHS", str([w // 4 for w in cfg.MODEL.CIFAR_RESNET.WIDTHS])]
    else:
        r = cfg.MODEL.RESNETS
        opts += ["MODEL.RESNETS.STEM_OUT_CHANNELS", str(r.STEM_OUT_CHANNELS // 4),
                 "MODEL.RESNETS.WIDTH_PER_GROUP", str(r.WIDTH_PER_GROUP // 4),
                 "MODEL.RESNETS.RES2_OUT_CHANNELS", str(r.RES2_OUT_CHANNELS // 4)]
    if is_detector(cfg):
        # FrozenBN trunks are meant to start from ImageNet weights; from random weights their identity norms double
        # the activations' variance in each residual block (a 101-layer net's first losses are ~1e5, then NaN).
        # Zero-initialised branch ends keep a random trunk's activations at the stem's scale.
        if cfg.MODEL.RESNETS.NORM == "FrozenBN":
            opts += ["MODEL.RESNETS.ZERO_INIT_RESIDUAL", "True"]
        opts += ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
                 "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
                 "MODEL.FPN.OUT_CHANNELS", str(cfg.MODEL.FPN.OUT_CHANNELS // 4),
                 "MODEL.ROI_BOX_HEAD.FC_DIM", str(cfg.MODEL.ROI_BOX_HEAD.FC_DIM // 4),
                 "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
                 "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
                 "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
        if not cfg.DATASETS.TRAIN:
            opts += coco_spec_datasets(root, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    else:
        # two images per process: BatchNorm needs more than one value per channel at res5's 1x1
        opts += ["SOLVER.IMS_PER_BATCH", "4", "INPUT.CROP.SIZE", "32", "INPUT.SCALE_RANGE", "(36, 44)",
                 "INPUT.TEST_RESIZE", "36", "TEST.SCALES", "(32, 40)"]
        if any(name.startswith("imagenet_") for name in cfg.DATASETS.TRAIN):
            # this root's imagenet/ has ImageNet's 1000 class folders; configs/toy_imagenet/ expects its toy set's 40
            opts += ["MODEL.CLASSIFIER.NUM_CLASSES", "1000"]
    return opts


def data_path(config: str) -> str:
    """What decides a config's loaders and evaluators once config_overrides apply: its kind of model, DATASETS,
    INPUT, DATALOADER and TEST, batch, seed and device. Configs with equal keys build equal loaders (test_config_pickles
    compares their pickles), so that the spawn-started workers of one of them speak for all."""
    cfg = file_config(config)
    cfg.merge_from_list(config_overrides(config, "<root>"))
    return json.dumps([is_detector(cfg), cfg.DATASETS, cfg.INPUT, cfg.DATALOADER, cfg.TEST, cfg.SOLVER.IMS_PER_BATCH,
                       cfg.SEED, cfg.MODEL.DEVICE], sort_keys=True)
