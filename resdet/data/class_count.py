"""The model's number of classes against the datasets it is trained or evaluated on."""
from typing import Sequence, Tuple

from ..errors import ConfigError
from .datasets import MetadataCatalog


def model_num_classes(cfg) -> Tuple[str, int]:
    """(config key, value) of the model's class count: the classifier's, or the detector's RoI heads'."""
    if cfg.MODEL.META_ARCHITECTURE == "Classifier":
        return "MODEL.CLASSIFIER.NUM_CLASSES", cfg.MODEL.CLASSIFIER.NUM_CLASSES
    return "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES


def check_num_classes(cfg, dataset_names: Sequence[str], config_file: str = "") -> None:
    """ConfigError naming both when the model's NUM_CLASSES differs from a dataset's number of thing_classes
    (datasets without thing_classes are not checked)."""
    key, num_classes = model_num_classes(cfg)
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != num_classes:
            shown = ", ".join(map(str, classes[:5])) + (", ..." if len(classes) > 5 else "")
            raise ConfigError(f"{config_file or 'default config'}: {key} is {num_classes} but dataset {name!r} has "
                              f"{len(classes)} classes ({shown}); set {key} {len(classes)}")
