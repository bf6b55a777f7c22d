"""Data loaders for training (infinite, sharded across ranks, resumable) and testing (finite, sharded)."""
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..engine import comm
from ..engine.allocator import release_freed_memory
from ..errors import ConfigError
from .datasets import DatasetCatalog, MetadataCatalog
from .mappers import (
    ClassificationTestMapper,
    ClassificationTrainMapper,
    DetectionTestMapper,
    DetectionTrainMapper,
    training_targets,
)
from .record_store import MORE, ConcatRecords, RecordStore
from .samplers import InferenceSampler, SampleKey, TrainingBatchSampler, TrainingSampler
from .skip_corrupt import CorruptImageSkipper

logger = logging.getLogger(__name__)


class MapDataset(Dataset):
    """records[i] through `mapper(record, rng)`.

    A training sample (a SampleKey) gets its own rng, seeded from (seed, epoch, index): its augmentation does
    not depend on which process or worker maps it, nor on what that worker mapped before, so a resumed run
    augments exactly as an uninterrupted one. Mappers must draw their randomness from this rng only.
    Plain indices (the deterministic test mappers) share one fixed rng.
    With `skip_corrupt` (DATALOADER.SKIP_CORRUPT, training only) an unreadable image's sample is replaced by the
    next readable one (resdet/data/skip_corrupt.py); a test set must not, as a repeated image would be scored twice.
    `context` is the loader workers' multiprocessing context, in which the skipper's shared counters are made.
    """

    def __init__(self, records: Sequence[dict], mapper: Callable, seed: int = 0, skip_corrupt: bool = False,
                 context: Optional[multiprocessing.context.BaseContext] = None):
        self.records, self.mapper, self.seed = records, mapper, seed
        self.rng = np.random.default_rng(seed)
        self.skipper = CorruptImageSkipper(records, context) if skip_corrupt else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: Union[int, SampleKey]):
        if isinstance(key, SampleKey):
            def load(index: int):
                return self.mapper(self.records[index], np.random.default_rng([self.seed, key.epoch, index]))
            index = key.index
        else:
            def load(index: int):
                return self.mapper(self.records[index], self.rng)
            index = key
        return self.skipper.fetch(index, load) if self.skipper is not None else load(index)


def _end_on_loader_request(loader_pid: int, worker_id: int) -> None:
    """A DataLoader worker ends when its own loader says so, not on a stop signal meant for the training.

    A terminal's Ctrl-C (SIGINT) and a scheduler's SIGTERM sent to every process of a job reach the workers too;
    a worker they killed would fail the batch the main process still needs while it finishes its iteration (and
    torch's SIGCHLD handler would abort it). So SIGINT is ignored, and SIGTERM ends the worker only when sent by
    the loader's process (or the worker's parent), as DataLoader shutdown and multiprocessing's exit handler do.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not on macOS: SIGTERM keeps its default there
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_wait_for_loader_sigterm, args=({loader_pid, os.getppid()},), daemon=True,
                     name=f"sigterm-{worker_id}").start()


def _wait_for_loader_sigterm(senders: Set[int]) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid not in senders:
        pass
    os._exit(0)  # a clean status: the loader has stopped watching this worker already


class InfiniteLoader:
    """An endless DataLoader usable both as `iter(loader)` and directly with `next(loader)`.

    Its state (`state_dict`: the data seed and the number of batches delivered) goes into training
    checkpoints; loaded before the first batch, it makes the loader continue where the saved one stopped.
    """

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.dataset = loader.dataset
        self.batch_sampler = loader.batch_sampler
        self.batches = 0  # delivered so far, counting those of the run this one resumes
        self._iterator = None

    def __iter__(self) -> "InfiniteLoader":
        return self

    def __next__(self):
        if self._iterator is None:
            self.batch_sampler.start = self.batches
            self._iterator = iter(self.loader)
        batch = next(self._iterator)
        self.batches += 1
        return batch

    def state_dict(self) -> Dict[str, int]:
        """The data seed and how many batches were delivered: where a resumed run continues."""
        return {"seed": self.dataset.seed, "batches": self.batches}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continue after state["batches"] batches of the order seeded by state["seed"] (before the first batch)."""
        if self._iterator is not None:
            raise RuntimeError("InfiniteLoader.load_state_dict: the loader has already started")
        seed = int(state["seed"])
        if seed != self.dataset.seed:
            logger.info("data order: continuing the resumed run's seed %d (this run drew %d)", seed, self.dataset.seed)
        self.dataset.seed = self.batch_sampler.sampler.seed = seed
        self.batches = int(state["batches"])


def shared_seed(cfg) -> int:
    """cfg.SEED, or (when negative) one random seed drawn on rank 0 and shared, so shards stay disjoint."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    return int(comm.all_gather(int(np.random.SeedSequence().entropy % 2**31))[0])


def images_per_process(cfg) -> int:
    """SOLVER.IMS_PER_BATCH divided by the world size."""
    total, world_size = cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size()
    if total % world_size != 0 or total < world_size:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH={total} must be a positive multiple of the world size {world_size}")
    return total // world_size


def load_datasets(names: Union[str, Sequence[str]], key: str = "DATASETS.TRAIN",
                  keep: Optional[Callable[[Sequence[dict]], Sequence[dict]]] = None,
                  shared: bool = True) -> Sequence[dict]:
    """The records of several catalog names read as one sequence; they must share their thing_classes.

    With `shared` each dataset's records stay a RecordStore (shared by loader workers, not copied), else they
    become a list of dicts; `keep`, if given, selects from each dataset (e.g. filter_empty).
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ConfigError(f"{key} is empty: name at least one dataset (see README section 'Datasets')")
    classes = {name: MetadataCatalog.get(name).get("thing_classes") for name in names}
    if len({tuple(c) if c is not None else None for c in classes.values()}) > 1:
        raise ConfigError(f"{key}: the datasets {names} have different thing_classes and cannot be concatenated")
    parts = []
    for name in names:
        records = DatasetCatalog.get_records(name) if shared else DatasetCatalog.get(name)
        logger.info("dataset %s: %d images", name, len(records))
        parts.append(keep(records) if keep is not None else records)
    return parts[0] if len(parts) == 1 else ConcatRecords(parts)


def _dataloader(cfg, dataset: Dataset, collate: Callable, **sampling) -> DataLoader:
    device = cfg.MODEL.DEVICE
    pin = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    # Its own generator: a DataLoader without one draws its workers' base seed from the global torch RNG at
    # every iter(), which would shift the model's random stream (RPN and RoI sampling) between runs.
    generator = torch.Generator().manual_seed(getattr(dataset, "seed", 0))
    worker_init = functools.partial(_end_on_loader_request, os.getpid())
    workers = cfg.DATALOADER.NUM_WORKERS
    return DataLoader(dataset, num_workers=workers, collate_fn=collate, pin_memory=pin, worker_init_fn=worker_init,
                      generator=generator, multiprocessing_context=worker_context(cfg) if workers else None,
                      **sampling)


def worker_context(cfg) -> multiprocessing.context.BaseContext:
    """The multiprocessing context of DATALOADER.START_METHOD ("": fork where available, else the default)."""
    method = cfg.DATALOADER.START_METHOD
    available = multiprocessing.get_all_start_methods()
    if method and method not in available:
        raise ConfigError(f"DATALOADER.START_METHOD: {method!r} is not available here; choose one of {available}")
    if not method:
        method = "fork" if "fork" in available and sys.platform.startswith("linux") else None
    return multiprocessing.get_context(method)


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
    records = load_datasets(cfg.DATASETS.TRAIN, shared=cfg.DATALOADER.SHARED_RECORDS)
    seed = shared_seed(cfg)
    sampler = TrainingSampler(len(records), seed, comm.get_rank(), comm.get_world_size())
    batch_sampler = TrainingBatchSampler(sampler, images_per_process(cfg))
    dataset = MapDataset(records, ClassificationTrainMapper(cfg), seed, skip_corrupt=cfg.DATALOADER.SKIP_CORRUPT,
                         context=worker_context(cfg) if cfg.DATALOADER.NUM_WORKERS else None)
    release_freed_memory()
    return InfiniteLoader(_dataloader(cfg, dataset, collate_classification, batch_sampler=batch_sampler))


def build_classification_test_loader(cfg, dataset_name: str, colour_test: str = "") -> DataLoader:
    """This rank's shard of `dataset_name` as (images, labels) batches (see ClassificationTestMapper), with
    the images changed by `colour_test` (a TEST.CLS_COLOUR_TESTS entry) if given.

    TEST.CLS_MODE "center" gives (N,3,S,S) and "ten_crop" (N,10,3,S,S), N = IMS_PER_BATCH / world;
    "fully_conv" gives one image per batch as a list of (1,3,h,w), one per TEST.SCALES.
    """
    records = load_datasets(dataset_name, "dataset_name", shared=cfg.DATALOADER.SHARED_RECORDS)
    sampler = InferenceSampler(len(records), comm.get_rank(), comm.get_world_size())
    batch_size = 1 if cfg.TEST.CLS_MODE == "fully_conv" else images_per_process(cfg)
    dataset = MapDataset(records, ClassificationTestMapper(cfg, colour_test))
    return _dataloader(cfg, dataset, collate_classification, sampler=sampler, batch_size=batch_size)


def filter_empty(records: Sequence[dict]) -> Sequence[dict]:
    """Drop images without a box usable for training (all absent, crowd or difficult)."""
    usable = images_with_boxes(records)
    kept = records.select(np.flatnonzero(usable)) if isinstance(records, RecordStore) else \
        [r for r, has_boxes in zip(records, usable) if has_boxes]
    logger.info("removed %d of %d images without usable annotations", len(records) - len(kept), len(records))
    return kept


def images_with_boxes(records: Sequence[dict]) -> np.ndarray:
    """(N,) bool: whether each record has an annotation usable for training (not crowd, not difficult)."""
    if isinstance(records, RecordStore) and isinstance(records.schema.get("annotations"), dict):
        annotations = records.nested("annotations")
        usable = np.ones(len(annotations), dtype=bool)
        flags = [field for field in ("iscrowd", "difficult") if field in annotations.schema]
        if all(annotations.schema[field] in ("int", "bool") for field in flags) and MORE not in annotations.schema:
            for field in flags:
                usable &= annotations.column(field) == 0
            return records.count_nested("annotations", usable) > 0
    return np.array([len(training_targets(r)[1]) > 0 for r in records], dtype=bool)


def portrait_flags(records: Sequence[dict]) -> np.ndarray:
    """(N,) int: 1 for portrait images (h > w), 0 for landscape: the groups of DATALOADER.ASPECT_RATIO_GROUPING."""
    if isinstance(records, ConcatRecords):
        return np.concatenate([portrait_flags(part) for part in records.parts])
    if isinstance(records, RecordStore) and records.schema.get("height") == records.schema.get("width") == "int":
        return (records.column("height") > records.column("width")).astype(np.int64)
    return np.array([int(r["height"] > r["width"]) for r in records], dtype=np.int64)


def build_detection_train_loader(cfg) -> InfiniteLoader:
    """Endless lists of N = IMS_PER_BATCH / world dicts from DetectionTrainMapper (resized images and boxes).

    With DATALOADER.ASPECT_RATIO_GROUPING a batch holds only landscape (w >= h) or only portrait images.
    """
    records = load_datasets(cfg.DATASETS.TRAIN, keep=filter_empty if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS else None,
                            shared=cfg.DATALOADER.SHARED_RECORDS)
    seed = shared_seed(cfg)
    sampler = TrainingSampler(len(records), seed, comm.get_rank(), comm.get_world_size())
    group_ids = portrait_flags(records) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    batch_sampler = TrainingBatchSampler(sampler, images_per_process(cfg), group_ids)
    dataset = MapDataset(records, DetectionTrainMapper(cfg), seed, skip_corrupt=cfg.DATALOADER.SKIP_CORRUPT,
                         context=worker_context(cfg) if cfg.DATALOADER.NUM_WORKERS else None)
    release_freed_memory()  # the index computations' temporaries: workers fork from a trimmed heap
    return InfiniteLoader(_dataloader(cfg, dataset, collate_list, batch_sampler=batch_sampler))


def build_detection_test_loader(cfg, dataset_name: str) -> DataLoader:
    """This rank's shard of `dataset_name`, one-image lists of {"image" (original), "height", "width",
    "image_id", "file_name"}; the model resizes with INPUT.MIN/MAX_SIZE_TEST itself."""
    records = load_datasets(dataset_name, "dataset_name", shared=cfg.DATALOADER.SHARED_RECORDS)
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
