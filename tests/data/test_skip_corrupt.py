"""DATALOADER.SKIP_CORRUPT: an unreadable image is replaced by the next readable index, warned about once,
and counted across DataLoader workers."""
import logging

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from resdet.data.errors import DataError
from resdet.data.image_io import read_image
from resdet.data.skip_corrupt import CorruptImageSkipper, log_skipped_images


class SkippingDataset(Dataset):
    """The wiring of a map-style dataset: each sample fetched through the skipper; a sample is (index, mean pixel)."""

    def __init__(self, records):
        self.records = records
        self.skipper = CorruptImageSkipper(records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.skipper.fetch(index, lambda i: (i, float(read_image(self.records[i]["file_name"], "BGR").mean())))


@pytest.fixture
def records(tmp_path):
    """Five images: 1 truncated, 2 missing, the others readable."""
    data = cv2.imencode(".jpg", np.full((16, 16, 3), 100, np.uint8))[1].tobytes()
    files = [tmp_path / f"{i:06d}.jpg" for i in range(5)]
    for i, path in enumerate(files):
        if i == 1:
            path.write_bytes(data[: len(data) // 2])
        elif i != 2:
            path.write_bytes(data)
    return [{"file_name": str(path), "image_id": i} for i, path in enumerate(files)]


def test_next_readable_index_replaces_and_each_file_warns_once(records, caplog):
    dataset = SkippingDataset(records)
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        served = [dataset[i][0] for i in [0, 1, 2, 3, 4, 1, 2]]
    assert served == [0, 3, 3, 3, 4, 3, 3]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "000001.jpg: truncated JPEG" in warned[0] and "000002.jpg" in warned[1]
    assert dataset.skipper.unreadable_files() == [records[1]["file_name"], records[2]["file_name"]]
    assert dataset.skipper.replaced_samples() == 4


def test_workers_share_the_count_and_the_final_summary_names_the_files(records, caplog):
    dataset = SkippingDataset(records)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=lambda batch: batch[0])
    assert [index for index, _ in loader] == [0, 3, 3, 3, 4]  # the same order whichever worker met the bad file
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        assert log_skipped_images(loader) == 2
    (summary,) = [r.getMessage() for r in caplog.records]
    assert "2 unreadable images were skipped (2 samples replaced)" in summary
    assert records[1]["file_name"] in summary and records[2]["file_name"] in summary


def test_nothing_logged_without_a_skipper_or_a_skip(records, caplog):
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        assert log_skipped_images(DataLoader(torch.arange(3))) == 0
        assert log_skipped_images(SkippingDataset(records[:1])) == 0
    assert not caplog.records


def test_all_unreadable_is_an_error_naming_the_first(records):
    dataset = SkippingDataset(records[1:3])
    with pytest.raises(DataError, match=r"2 images in a row from .*000001\.jpg on cannot be read"):
        dataset[0]
