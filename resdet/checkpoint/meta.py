"""A checkpoint's `meta` entry: what a deployed model needs besides its weights (class names, input format, pixel
statistics, test sizes), in plain types so that torch.load(weights_only=True) reads it. The training tools write
it; older checkpoints have none, and readers then fall back to the config."""
import logging
from typing import Any, Dict, List, Mapping, Optional

logger = logging.getLogger(__name__)

META_KEY = "meta"
# the entries that say how pixels must look to the model; a transferred backbone should see the same
INPUT_KEYS = ("input_format", "pixel_mean", "pixel_std")


def num_classes(cfg) -> int:
    """The number of classes the config's model predicts."""
    if cfg.MODEL.META_ARCHITECTURE == "Classifier":
        return cfg.MODEL.CLASSIFIER.NUM_CLASSES
    return cfg.MODEL.ROI_HEADS.NUM_CLASSES


def dataset_class_names(names) -> Optional[List[str]]:
    """thing_classes of the first of the datasets `names` whose metadata has them (None if none is available)."""
    from ..data import DatasetNotFoundError, MetadataCatalog

    for name in names:
        try:
            classes = MetadataCatalog.get(name).get("thing_classes")
        except (DatasetNotFoundError, KeyError):  # not on this machine, or not registered here
            continue
        if classes:
            return [str(c) for c in classes]
    return None


def model_meta(cfg) -> Dict[str, Any]:
    """The `meta` entry for checkpoints of the config's model; class names from DATASETS.TRAIN's metadata."""
    meta = config_meta(cfg)
    classes = dataset_class_names(cfg.DATASETS.TRAIN)
    if classes is not None:
        meta["class_names"] = classes
    return meta


def config_meta(cfg) -> Dict[str, Any]:
    """What the config says about the model's inputs and outputs: all of `meta` but the class names."""
    from .. import __version__

    meta = {
        "resdet_version": __version__,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "num_classes": num_classes(cfg),
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
    }
    if cfg.MODEL.META_ARCHITECTURE == "Classifier":
        meta.update(cls_mode=cfg.TEST.CLS_MODE, test_resize=int(cfg.INPUT.TEST_RESIZE),
                    crop_size=int(cfg.INPUT.CROP.SIZE))
    else:
        meta.update(min_size_test=int(cfg.INPUT.MIN_SIZE_TEST), max_size_test=int(cfg.INPUT.MAX_SIZE_TEST))
    return meta


def read_meta(raw: Mapping) -> Dict[str, Any]:
    """The `meta` entry of a loaded checkpoint, or {} when it has none (older checkpoints, other formats)."""
    meta = raw.get(META_KEY) if isinstance(raw, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def class_names(cfg, meta: Mapping[str, Any]) -> List[str]:
    """The model's class names: the checkpoint's, else the config's datasets' (DATASETS.TEST, then TRAIN), else
    "class_<i>"; a fallback is logged."""
    count = num_classes(cfg)
    names = meta.get("class_names")
    if names is not None and len(names) == count:
        return list(names)
    if names is not None:
        logger.warning("checkpoint meta has %d class names for a model of %d classes; ignoring them", len(names), count)
    names = dataset_class_names(tuple(cfg.DATASETS.TEST) + tuple(cfg.DATASETS.TRAIN))
    if names is not None and len(names) == count:
        logger.warning("the weights carry no class names; using those of the config's datasets")
        return names
    logger.warning("no class names in the weights or the config's datasets; naming the classes class_0..class_%d",
                   count - 1)
    return [f"class_{index}" for index in range(count)]


def warn_on_input_mismatch(cfg, meta: Mapping[str, Any], path: str) -> None:
    """Log a warning when weights were trained on pixels other than the config's (format, mean, std)."""
    expected = {"input_format": cfg.INPUT.FORMAT, "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
                "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD]}
    differ = [f"{key} {meta[key]} (config: {expected[key]})" for key in INPUT_KEYS
              if key in meta and meta[key] != expected[key]]
    if differ:
        logger.warning("%s was trained on other pixels than the config gives: %s; set INPUT.FORMAT and "
                       "MODEL.PIXEL_MEAN/STD as it was trained", path, "; ".join(differ))
