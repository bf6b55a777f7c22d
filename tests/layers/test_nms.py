"""resdet's threaded batched NMS against torchvision.ops.batched_nms: the same indices in the same order."""
import pytest
import torch
import torchvision

from resdet.layers import nms


def random_boxes(count: int, groups: int, generator: torch.Generator, tied: bool = False):
    corner = torch.rand(count, 2, generator=generator) * 200
    size = torch.rand(count, 2, generator=generator) * 60 + 1
    boxes = torch.cat([corner, corner + size], dim=1)
    scores = torch.rand(count, generator=generator)
    if tied:  # many equal scores, as saturated probabilities give
        scores = (scores * 4).round() / 4
    # group sizes from large to tiny, and some groups without boxes (labels 0..groups-1 not all used)
    labels = (torch.rand(count, generator=generator) ** 3 * groups).long() * 2
    return boxes, scores, labels


@pytest.mark.parametrize("count,groups,tied", [(1500, 20, False), (4000, 80, False), (2500, 5, True)])
def test_equals_torchvision_batched_nms(count, groups, tied):
    generator = torch.Generator().manual_seed(count)
    boxes, scores, labels = random_boxes(count, groups, generator, tied)
    assert nms.threaded_nms_applies(boxes) == (torch.get_num_threads() > 1)
    for threshold in (0.3, 0.7):
        ours = nms.batched_nms(boxes, scores, labels, threshold)
        reference = torchvision.ops.batched_nms(boxes, scores, labels, threshold)
        assert torch.equal(ours, reference)


def test_threads_are_used_and_one_thread_falls_back(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    boxes, scores, labels = random_boxes(2000, 10, generator)
    calls = []
    monkeypatch.setattr(nms, "_executor", lambda workers: calls.append(workers) or nms.ThreadPoolExecutor(workers))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(nms.batched_nms(boxes, scores, labels, 0.5),
                           torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
        assert calls == [2]
        torch.set_num_threads(1)
        assert not nms.threaded_nms_applies(boxes)
        assert torch.equal(nms.batched_nms(boxes, scores, labels, 0.5),
                           torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
        assert calls == [2]
    finally:
        torch.set_num_threads(threads)
    few = boxes[:1000]  # torchvision's single offset NMS: taken as it is
    assert not nms.threaded_nms_applies(few)
