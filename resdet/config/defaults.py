"""Every config key resdet reads, with its default and what it means."""
from .config import CfgNode as CN

_C = CN()
_C.VERSION = 1

# ---------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "Classifier"  # "Classifier" or "FasterRCNN" (META_ARCH_REGISTRY)
_C.MODEL.DEVICE = "cpu"  # "cpu", "cuda", "cuda:1" (one process only); "auto" picks cuda when available
_C.MODEL.WEIGHTS = ""  # whole-model weights loaded by resdet.load_weights (any supported format)
# Pixel statistics in INPUT.FORMAT order, on the 0-255 scale. Default: the MSRA models (BGR, std 1).
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"  # a BACKBONE_REGISTRY entry
_C.MODEL.BACKBONE.FREEZE_AT = 0  # 0: train all; 1: freeze stem; k: stem and res2..res{k}
_C.MODEL.BACKBONE.WEIGHTS = ""  # backbone-only weights (a classification checkpoint, torchvision, .pkl)

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34 (basic block) or 50, 101, 152 (bottleneck)
_C.MODEL.RESNETS.RESIDUAL = True  # False builds the paper's plain network (no shortcuts)
_C.MODEL.RESNETS.SHORTCUT = "B"  # "A" zero-padded identity, "B" projection where shape changes, "C" always
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True  # bottleneck stride on the 1x1 (paper/MSRA) or on the 3x3 (torchvision)
_C.MODEL.RESNETS.NORM = "BN"  # "BN", "FrozenBN", "SyncBN", "GN"
_C.MODEL.RESNETS.OUT_FEATURES = ["res5"]  # any of stem, res2, res3, res4, res5
_C.MODEL.RESNETS.ZERO_INIT_RESIDUAL = False  # zero the last norm's scale in each residual branch
_C.MODEL.RESNETS.NUM_GROUPS = 1  # groups of the 3x3 conv in a bottleneck
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width of res2 per group
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # 256 for bottleneck depths; basic blocks use 64
_C.MODEL.RESNETS.RES5_DILATION = 1  # 2 keeps res5 at stride 16

_C.MODEL.CIFAR_RESNET = CN()
_C.MODEL.CIFAR_RESNET.N = 3  # 6n+2 layers: 3, 5, 7, 9, 18, 200 -> ResNet-20 ... 1202
_C.MODEL.CIFAR_RESNET.WIDTHS = [16, 32, 64]  # filters of the three stages

_C.MODEL.CLASSIFIER = CN()
_C.MODEL.CLASSIFIER.NUM_CLASSES = 1000

# ---------------------------------------------------------------- detection
_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.FPN.OUT_CHANNELS = 256
_C.MODEL.FPN.TOP_BLOCK = "maxpool"  # P6 by stride-2 max pooling of P5 ("" for none)

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]  # one list per feature level, or one for all
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]  # height / width
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # anchor centre offset in units of the stride
_C.MODEL.ANCHOR_GENERATOR.ROUND_CELL_ANCHORS = False  # round cell anchor corners to integers (torchvision)
_C.MODEL.ANCHOR_GENERATOR.STRIDE_FROM_IMAGE = False  # stride = padded side // feature side (torchvision), else nominal

_C.MODEL.RPN = CN()
_C.MODEL.RPN.IN_FEATURES = ["res4"]
_C.MODEL.RPN.HEAD_CONV_DIMS = [-1]  # -1: as many channels as the input
_C.MODEL.RPN.BOUNDARY_THRESH = -1  # drop anchors beyond the image by more than this; -1 keeps all
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]  # below 0.3 negative, between ignored, above 0.7 positive
_C.MODEL.RPN.ALLOW_LOW_QUALITY_MATCHES = True
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"  # "smooth_l1" or "l1"
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000  # per level
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000  # per image (per level when POST_NMS_PER_LEVEL)
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.POST_NMS_PER_LEVEL = False  # torchvision keeps post-NMS top-k over all levels too
_C.MODEL.RPN.NMS_THRESH = 0.7
# proposals with a side < MIN_SIZE (input pixels) are removed, and empty ones (a side <= 0) always are: 0 is
# detectron2's rule (sides > 0), 1e-3 torchvision's (sides >= 1e-3)
_C.MODEL.RPN.MIN_SIZE = 0.0
_C.MODEL.RPN.SCORE_THRESH = 0.0  # proposals with a lower objectness probability are removed
# what orders proposals for NMS and the post-NMS top-k: "logit" (detectron2) or "probability" (torchvision), whose
# sigmoid is exactly 1.0 in fp32 above a logit of ~16.6, so that confident boxes tie and the first one wins
_C.MODEL.RPN.RANK_BY = "logit"

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"  # "Res5ROIHeads" (C4, the paper) or "StandardROIHeads" (FPN)
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE = 100
_C.MODEL.ROI_HEADS.MIN_BOX_SIZE_TEST = 0.0  # detections smaller than this are removed (torchvision: 0.01)

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"  # "ROIAlignV2" (aligned), "ROIAlign", "ROIPool"
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0  # StandardROIHeads: fc layers of FC_DIM after pooling
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False

# ---------------------------------------------------------------- input
_C.INPUT = CN()
_C.INPUT.FORMAT = "BGR"  # channel order the model receives: "BGR" (MSRA) or "RGB" (torchvision)
# Detection: shorter side resized to one of MIN_SIZE_TRAIN (random choice), longer side capped.
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" or "range"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" or "none"
# Classification augmentation.
_C.INPUT.CLS_AUGMENTATION = "imagenet"  # "imagenet" (the paper's section 3.4), "cifar" or "none"
_C.INPUT.SCALE_RANGE = (256, 480)  # training shorter side, uniform in this range
_C.INPUT.TEST_RESIZE = 256  # shorter side before the centre / ten crops at test time
_C.INPUT.LIGHTING_STD = 0.1  # AlexNet PCA lighting noise; 0 disables
_C.INPUT.CIFAR_PAD = 4
# rotate each training image's hue by a random angle in [-HUE_JITTER, HUE_JITTER] degrees (180: any hue), so
# that a classifier cannot lean on colour, nor on the brightness contrast a particular colour pair happens to have
_C.INPUT.HUE_JITTER = 0.0
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = True
_C.INPUT.CROP.SIZE = 224  # square crop for classification (32 for CIFAR)

# ---------------------------------------------------------------- data
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # names in the catalogue (resdet/data/datasets/catalog.py)
_C.DATASETS.TEST = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
_C.DATALOADER.SKIP_CORRUPT = False  # training: replace an unreadable image by the next readable one, warn, count
# Records as flat arrays shared by all loader workers and processes (resdet/data/record_store.py); False gives each
# a list of dicts, which every worker ends up copying (fork's copy-on-write meets reference counts).
_C.DATALOADER.SHARED_RECORDS = True
# How loader workers start: "" = "fork" where the platform has it (Linux), else its default ("spawn" on macOS and
# Windows); or "fork", "spawn", "forkserver". Without it, processes started by --num-gpus (spawn) would spawn
# their workers too, each importing torch again (about 450 MB each).
_C.DATALOADER.START_METHOD = ""

# ---------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.IMS_PER_BATCH = 256  # total over all processes
_C.SOLVER.OPTIMIZER = "SGD"  # "SGD" (momentum, the paper's) or "AdamW" (decoupled weight decay)
_C.SOLVER.BASE_LR = 0.1
_C.SOLVER.MOMENTUM = 0.9  # SGD
_C.SOLVER.NESTEROV = False  # SGD
_C.SOLVER.BETAS = (0.9, 0.999)  # AdamW
# lr multiplier of the ResNet trunk (stem, res2..res5; C4's per-region res5 too): below 1 lets a pretrained
# backbone move less than the new heads
_C.SOLVER.BACKBONE_LR_FACTOR = 1.0
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.WEIGHT_DECAY_NORM = 1e-4  # weight decay of normalisation layers' scale and shift
_C.SOLVER.MAX_ITER = 600000
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR"
_C.SOLVER.STEPS = (150000, 300000, 450000)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.WARMUP_FACTOR = 0.001
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant" (the paper's ResNet-110 warmup)
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.CHECKPOINT_KEEP = 0  # keep only the newest N model_NNNNNNN.pth (0: all); model_final.pth always stays
_C.SOLVER.REFERENCE_WORLD_SIZE = 0  # >0: scale batch and lr linearly to the actual world size
_C.SOLVER.CHANNELS_LAST = False
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # bf16 autocast on CPU, fp16 with a grad scaler on CUDA

# ---------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # 0: evaluate only at the end
_C.TEST.COCO_EVAL_BACKEND = "pycocotools"  # COCO box AP: "pycocotools" or "faster_coco_eval" (same numbers, faster)
_C.TEST.CLS_MODE = "center"  # "center" (resize, centre crop), "ten_crop", "fully_conv"
_C.TEST.SCALES = (224, 256, 384, 480, 640)  # shorter sides averaged by fully_conv testing
# classification accuracy also measured on changed copies of the test images, reported as top1_<name>: "grayscale"
# (colour removed) and "hue<degrees>" (every hue rotated, e.g. "hue90"): does the model see shape or colour?
_C.TEST.CLS_COLOUR_TESTS = ()
# detection: also evaluate the RPN's proposals as COCO average recall (AR@100, AR@1000, by size) on COCO-json sets
_C.TEST.EVAL_PROPOSALS = False
# keep OUTPUT_DIR/model_best.pth: the weights of the evaluation with the best value of this metric, as the tools name
# it in results and metrics ("bbox/AP50", "bbox/AP", "voc/AP50_07", "top1"); "" keeps none
_C.TEST.BEST_METRIC = ""
_C.TEST.BEST_METRIC_MODE = "max"  # "max": higher is better (AP, accuracy); "min": lower is (an error, a loss)
_C.TEST.AUG = CN()
# Detection test-time augmentation (resdet/modeling/detector/tta.py), in every evaluation and the Predictor: the image
# at each shorter side of MIN_SIZES (longer side at most MAX_SIZE) and, with FLIP, mirrored too; the detections of
# all passes merged per class by "nms" or "vote" (NMS, then each kept box the score-weighted mean of its cluster; on
# the toy detector 2 AP above "nms": README, "Test-time augmentation")
_C.TEST.AUG.ENABLED = False
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800)
_C.TEST.AUG.MAX_SIZE = 2000
_C.TEST.AUG.FLIP = True
_C.TEST.AUG.MERGE = "vote"

# ---------------------------------------------------------------- several processes
_C.DIST = CN()
# Seconds a collective waits for the other processes before the job fails: how long a process that hangs (or a
# machine that vanished without closing its connections) can hold the job. A process that dies is noticed at once.
_C.DIST.TIMEOUT = 1800

_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # <0: a random seed, logged
_C.CUDNN_BENCHMARK = False
