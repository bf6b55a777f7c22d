"""Test-time augmentation: the scale and mirror mappings are exact on a hand-made scene, the merge rules equal a
hand computation, and the config path wraps a real detector (C4 and FPN) in both the tools' and Predictor's way."""
import os

import pytest
import torch
from torch import nn

import resdet
from resdet.modeling.detector.rcnn import FasterRCNN
from resdet.modeling.detector.tta import DetectorWithTTA, hflip_boxes, merge_detections, with_test_time_augmentation

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")
# A 60 x 90 image, black but for a white rectangle over columns 30..47 and rows 12..23: its box is [30, 12, 48, 24]
HEIGHT, WIDTH = 60, 90
TRUE_BOX = [30.0, 12.0, 48.0, 24.0]


class PixelsAsFeatures(nn.Module):
    """A 'backbone' handing the normalised, resized, padded images on unchanged."""

    size_divisibility = 1

    def forward(self, images):
        return {"image": images}


class NoProposals(nn.Module):
    def forward(self, features, image_shape, image_sizes, gt_boxes=None):
        return None, {}


class BrightRegion(nn.Module):
    """'RoI heads' detecting the bounding box of the pixels above mid-grey, in the input the model resized: a box
    the resize or the mirror moved by a fraction of a pixel, or not moved back, is off."""

    def forward(self, features, proposals, image_sizes, gt_boxes=None, gt_labels=None):
        detections = []
        for image in features["image"]:
            rows = torch.where((image[0] > 127.5).any(dim=1))[0]
            cols = torch.where((image[0] > 127.5).any(dim=0))[0]
            box = torch.stack([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]).float()[None]  # pixel edges
            detections.append({"boxes": box, "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.int64)})
        return detections, {}


def _scene():
    image = torch.zeros(3, HEIGHT, WIDTH)
    image[:, 12:24, 30:48] = 255.0
    return [{"image": image, "height": HEIGHT, "width": WIDTH}]


def _stub_detector():
    return FasterRCNN(PixelsAsFeatures(), NoProposals(), BrightRegion(), [0.0] * 3, [1.0] * 3, 60, 1000).eval()


def test_every_pass_maps_back_to_the_true_box_exactly():
    # scales 0.5, 1, 1.5, 2 and, for 120 with MAX_SIZE 150, 150 / 90: the rectangle's edges land on pixel edges
    tta = DetectorWithTTA(_stub_detector(), [30, 60, 90, 120], 150, flip=True, merge="nms", nms_thresh=0.5,
                          detections_per_image=100)
    assert tta.augmentations() == [(s, f) for s in (30, 60, 90, 120) for f in (False, True)]
    passes = tta.augmented_detections(_scene())
    assert len(passes) == 8
    for (size, flipped), outputs in zip(tta.augmentations(), passes):
        # float32 rounding only (150 / 90 has no exact binary form): a pixel's 1/150 is 650 times larger
        torch.testing.assert_close(outputs[0]["boxes"], torch.tensor([TRUE_BOX]), atol=1e-5, rtol=0,
                                   msg=f"size {size}, mirrored {flipped}")
    merged = tta(_scene())[0]
    torch.testing.assert_close(merged["boxes"], torch.tensor([TRUE_BOX]), atol=1e-5, rtol=0)
    assert merged["scores"].tolist() == [1.0]


def test_the_mirrored_pass_really_saw_a_mirrored_image():
    # without mirroring back, the box of the mirrored pass would be the rectangle's mirror image
    model = _stub_detector()
    mirrored = model.inference([{**_scene()[0], "image": _scene()[0]["image"].flip(-1)}])[0]["boxes"]
    assert mirrored.tolist() == [[WIDTH - 48.0, 12.0, WIDTH - 30.0, 24.0]]
    assert hflip_boxes(mirrored, WIDTH).tolist() == [TRUE_BOX]


def test_merge_by_nms_and_by_vote_equal_a_hand_computation():
    first = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), "scores": torch.tensor([0.9, 0.8]),
             "labels": torch.tensor([0, 1])}
    # IoU with the first box: 100 / 120 = 0.83; the third box overlaps too but is of another class
    second = {"boxes": torch.tensor([[0.0, 0, 10, 12], [0, 0, 10, 10]]), "scores": torch.tensor([0.6, 0.7]),
              "labels": torch.tensor([0, 2])}
    nms = merge_detections([first, second], nms_thresh=0.5, max_detections=10, method="nms")
    assert nms["boxes"].tolist() == [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]]
    assert nms["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7]) and nms["labels"].tolist() == [0, 1, 2]
    vote = merge_detections([first, second], nms_thresh=0.5, max_detections=10, method="vote")
    y2 = (0.9 * 10 + 0.6 * 12) / (0.9 + 0.6)  # 10.8: the score-weighted mean of the class-0 cluster
    torch.testing.assert_close(vote["boxes"], torch.tensor([[0, 0, 10, y2], [50, 50, 60, 60], [0, 0, 10, 10]]))
    assert vote["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    top = merge_detections([first, second], nms_thresh=0.5, max_detections=2, method="vote")
    assert top["scores"].tolist() == pytest.approx([0.9, 0.8])


@pytest.mark.parametrize("config", ["Base-RCNN-C4.yaml", "Base-RCNN-FPN.yaml"])
def test_config_wraps_a_real_detector(config):
    cfg = resdet.get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, config))
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NORM", "BN", "MODEL.ROI_HEADS.NUM_CLASSES", "3",
                         "MODEL.RPN.POST_NMS_TOPK_TEST", "20", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                         "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "100",
                         "TEST.AUG.MERGE", "nms"])
    torch.manual_seed(0)
    model = resdet.build_model(cfg).eval()
    tta = with_test_time_augmentation(cfg, model)
    assert isinstance(tta, DetectorWithTTA) and tta.augmentations() == [(48, False), (48, True), (64, False),
                                                                         (64, True)]
    batch = [{"image": torch.rand(3, 40, 56) * 255, "height": 80, "width": 112}]
    with torch.inference_mode():
        passes = tta.augmented_detections(batch)
        merged = tta(batch)[0]
    pooled = torch.cat([outputs[0]["boxes"] for outputs in passes])
    assert len(merged["boxes"]) <= cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE
    # NMS keeps boxes of the passes, each in the 80 x 112 frame of "height" x "width"
    assert all((pooled == box).all(dim=1).any() for box in merged["boxes"])
    assert pooled[:, 2].max() <= 112 + 1e-3 and pooled[:, 3].max() <= 80 + 1e-3
    cfg.TEST.AUG.ENABLED = False
    assert with_test_time_augmentation(cfg, model) is model
