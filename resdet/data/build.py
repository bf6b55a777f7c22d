"""Data loaders for training (infinite, sharded across ranks) and testing (finite, sharded), built from the config."""
import logging
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, get_worker_info

from ..engine import comm
from .datasets import DatasetCatalog, MetadataCatalog
from .mappers import (
    ClassificationTestMapper, ClassificationTrainMapper, DetectionTestMapper, DetectionTrainMapper, training_targets,
)
from .samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler

logger = logging.getLogger(__name__)


class MapDataset(Dataset):
    """records[i] through `mapper(record, rng)`; rng is per process and per worker, seeded from (seed, rank, worker)."""

    def __init__(self, records: List[dict], mapper: Callable, seed: int = 0, rank: int = 0):
        self.records, self.mapper, self.seed, self.rank = records, mapper, seed, rank
        self.rng = np.random.default_rng([seed, rank, 0])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        return self.mapper(self.records[index], self.rng)


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own reproducible stream."""
    dataset = get_worker_info().dataset
    dataset.rng = np.random.default_rng([dataset.seed, dataset.rank, worker_id + 1])


class InfiniteLoader:
    """An endless DataLoader usable both as `iter(loader)` and directly with `next(loader)`."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.dataset = loader.dataset
        self._iterator = None

    def __iter__(self) -> "InfiniteLoader":
        return self

    def __next__(self):
        if self._iterator is None:
            self._iterator = iter(self.loader)
        return next(self._iterator)


def shared_seed(cfg) -> int:
    """cfg.SEED, or (when negative) one random seed drawn on rank 0 and shared, so shards stay disjoint."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    return int(comm.all_gather(int(np.random.SeedSequence().entropy % 2**31))[0])


def images_per_process(cfg) -> int:
    """SOLVER.IMS_PER_BATCH divided by the world size."""
    total, world_size = cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size()
    if total % world_size != 0 or total < world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={total} must be a positive multiple of the world size {world_size}")
    return total // world_size


def load_datasets(names: Union[str, Sequence[str]], key: str = "DATASETS.TRAIN") -> List[dict]:
    """The concatenated dicts of several catalog names, which must share their thing_classes."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(f"{key} is empty: name at least one dataset (see README section 'Datasets')")
    classes = {name: MetadataCatalog.get(name).get("thing_classes") for name in names}
    if len({tuple(c) if c is not None else None for c in classes.values()}) > 1:
        raise ValueError(f"{key}: the datasets {names} have different thing_classes and cannot be concatenated")
    records = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        logger.info("dataset %s: %d images", name, len(dicts))
        records.extend(dicts)
    return records


def _dataloader(cfg, dataset: Dataset, collate: Callable, **sampling) -> DataLoader:
    device = cfg.MODEL.DEVICE
    pin = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return DataLoader(dataset, num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=collate, pin_memory=pin,
                      worker_init_fn=_seed_worker, **sampling)


def collate_classification(batch: List[tuple]) -> Tuple[Union[torch.Tensor, List[torch.Tensor]], torch.Tensor]:
    """Stack images ((N,3,S,S) or (N,10,3,S,S)); for multi-scale lists, one (N,3,h,w) per scale."""
    images, labels = zip(*batch)
    labels = torch.tensor(labels, dtype=torch.int64)  # (N,)
    if isinstance(images[0], list):
        return [torch.stack(per_scale) for per_scale in zip(*images)], labels
    return torch.stack(images), labels


def collate_list(batch: List[dict]) -> List[dict]:
    """Detection batches stay lists of per-image dicts (images differ in size)."""
    return batch


def build_classification_train_loader(cfg) -> InfiniteLoader:
    """Endless (images (N,3,S,S) float 0-255 in INPUT.FORMAT, labels (N,) int64), N = IMS_PER_BATCH / world."""
    records = load_datasets(cfg.DATASETS.TRAIN)
    seed, rank = shared_seed(cfg), comm.get_rank()
    sampler = TrainingSampler(len(records), seed, rank, comm.get_world_size())
    batch_sampler = BatchSampler(sampler, images_per_process(cfg), drop_last=True)
    dataset = MapDataset(records, ClassificationTrainMapper(cfg), seed, rank)
    return InfiniteLoader(_dataloader(cfg, dataset, collate_classification, batch_sampler=batch_sampler))


def build_classification_test_loader(cfg, dataset_name: str, colour_test: str = "") -> DataLoader:
    """This rank's shard of `dataset_name` as (images, labels) batches (see ClassificationTestMapper), with
    the images changed by `colour_test` (a TEST.CLS_COLOUR_TESTS entry) if given.

    TEST.CLS_MODE "center" gives (N,3,S,S) and "ten_crop" (N,10,3,S,S), N = IMS_PER_BATCH / world;
    "fully_conv" gives one image per batch as a list of (1,3,h,w), one per TEST.SCALES.
    """
    records = load_datasets(dataset_name, "dataset_name")
    sampler = InferenceSampler(len(records), comm.get_rank(), comm.get_world_size())
    batch_size = 1 if cfg.TEST.CLS_MODE == "fully_conv" else images_per_process(cfg)
    dataset = MapDataset(records, ClassificationTestMapper(cfg, colour_test))
    return _dataloader(cfg, dataset, collate_classification, sampler=sampler, batch_size=batch_size)


def filter_empty(records: List[dict]) -> List[dict]:
    """Drop images without a box usable for training (all absent, crowd or difficult)."""
    kept = [r for r in records if len(training_targets(r)[1]) > 0]
    logger.info("removed %d of %d images without usable annotations", len(records) - len(kept), len(records))
    return kept


def build_detection_train_loader(cfg) -> InfiniteLoader:
    """Endless lists of N = IMS_PER_BATCH / world dicts from DetectionTrainMapper (resized images and boxes).

    With DATALOADER.ASPECT_RATIO_GROUPING a batch holds only landscape (w >= h) or only portrait images.
    """
    records = load_datasets(cfg.DATASETS.TRAIN)
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        records = filter_empty(records)
    seed, rank = shared_seed(cfg), comm.get_rank()
    sampler = TrainingSampler(len(records), seed, rank, comm.get_world_size())
    batch_size = images_per_process(cfg)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        group_ids = [int(r["height"] > r["width"]) for r in records]
        batch_sampler = GroupedBatchSampler(sampler, group_ids, batch_size)
    else:
        batch_sampler = BatchSampler(sampler, batch_size, drop_last=True)
    dataset = MapDataset(records, DetectionTrainMapper(cfg), seed, rank)
    return InfiniteLoader(_dataloader(cfg, dataset, collate_list, batch_sampler=batch_sampler))


def build_detection_test_loader(cfg, dataset_name: str) -> DataLoader:
    """This rank's shard of `dataset_name`, one-image lists of {"image" (original), "height", "width",
    "image_id", "file_name"}; the model resizes with INPUT.MIN/MAX_SIZE_TEST itself."""
    records = load_datasets(dataset_name, "dataset_name")
    sampler = InferenceSampler(len(records), comm.get_rank(), comm.get_world_size())
    dataset = MapDataset(records, DetectionTestMapper(cfg))
    return _dataloader(cfg, dataset, collate_list, sampler=sampler, batch_size=1)


__all__ = [
    "build_classification_train_loader",
    "build_classification_test_loader",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "load_datasets",
]
