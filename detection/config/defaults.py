"""Every configuration key, its default and a one-line meaning.

Configs under `configs/` override these; `tools/*.py` take trailing `KEY VALUE` pairs on top.
Suffixes `_TRAIN` / `_TEST` separate the values used in training and at inference. Images are
BGR in 0-255 (OpenCV order), normalised by `INPUT.PIXEL_MEAN` / `INPUT.PIXEL_STD`.
"""

from yacs.config import CfgNode as CN

_C = CN()

_C.WORKSPACE = "work_space"  # where model/, log/, final/, save/ and inference/ go
_C.SEED = 0  # global seed for python, numpy and torch (each rank adds its rank)
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms + deterministic data order
_C.DDP_FIND_UNUSED_PARAMETERS = (
    False  # DDP tolerates parameters without gradient (slower; rarely needed)
)

# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # the detector class
_C.MODEL.DEVICE = "cuda"  # "cuda" or "cpu"; tools fall back to cpu when no GPU is visible
_C.MODEL.WEIGHT = ""  # initial weights (a checkpoint or a torchvision ResNet state dict), "" = none
_C.MODEL.MASK_ON = True  # predict instance masks (Mask R-CNN) besides boxes
_C.MODEL.RPN_ONLY = False  # stop after the RPN (proposals are the output)
_C.MODEL.MIMIC_ON = False  # R-CNN feature-mimicking branch (training only; DCNv2 paper sec. 3.3)

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.CONV_BODY = "R-50-C5"  # "R-{18,34,50,101}-C5": ResNet up to res5 (stride 16)
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = (
    0  # stages < this (0 = none, 1 = stem, 2 = stem+res2) frozen
)

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.NUM_GROUPS = 1  # ResNeXt cardinality (1 = ResNet)
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width of res2 per group
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64  # channels out of the stem
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # channels out of res2 (64 for BasicBlock depths 18/34)
_C.MODEL.RESNETS.STRIDE_IN_1X1 = (
    False  # stride in the 1x1 conv (Caffe2 MSRA) or the 3x3 (torchvision)
)
_C.MODEL.RESNETS.NORM = "GN"  # "FrozenBN", "BN" or "GN"
_C.MODEL.RESNETS.RES5_DILATION = 2  # res5 with stride 1 and this dilation: output stride 16 (C5)
_C.MODEL.RESNETS.STAGE_WITH_DCN = (False, True, True, True)  # res2..res5: 3x3 convs deformable
_C.MODEL.RESNETS.WITH_MODULATED_DCN = True  # DCNv2 (modulated) or DCNv1 in those stages
_C.MODEL.RESNETS.DEFORMABLE_GROUPS = 1  # deformable groups of each deformable conv

_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32  # GroupNorm groups
_C.MODEL.GROUP_NORM.EPSILON = 1e-5  # GroupNorm epsilon

_C.MODEL.RPN = CN()
_C.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)  # anchor sides in input pixels (5 scales)
_C.MODEL.RPN.ASPECT_RATIOS = (0.5, 1.0, 2.0)  # anchor height/width ratios (3 ratios)
_C.MODEL.RPN.ANCHOR_STRIDE = 16  # stride of the feature map the RPN runs on (C4)
_C.MODEL.RPN.STRADDLE_THRESH = (
    0  # anchors beyond the image by more than this are ignored (-1 = keep)
)
_C.MODEL.RPN.FG_IOU_THRESHOLD = 0.7  # anchor IoU >= this: positive
_C.MODEL.RPN.BG_IOU_THRESHOLD = 0.3  # anchor IoU < this: negative
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the RPN losses
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # at most this fraction of them positive (1:1)
_C.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 12000  # proposals kept before NMS per image, training
_C.MODEL.RPN.PRE_NMS_TOP_N_TEST = 6000  # same, inference
_C.MODEL.RPN.POST_NMS_TOP_N_TRAIN = 2000  # proposals kept after NMS per image, training
_C.MODEL.RPN.POST_NMS_TOP_N_TEST = 1000  # same, inference
_C.MODEL.RPN.NMS_THRESH = 0.7  # IoU threshold of the proposal NMS
_C.MODEL.RPN.MIN_SIZE = 0  # proposals smaller than this (input pixels) are dropped
_C.MODEL.RPN.HEAD_CHANNELS = 512  # channels of the RPN's 3x3 conv
_C.MODEL.RPN.SMOOTH_L1_BETA = 1.0 / 9  # smooth L1 beta of loss_rpn_box_reg

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.5  # proposal IoU >= this: foreground
_C.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.5  # proposal IoU < this: background
_C.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # box coder weights (x, y, w, h)
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # RoIs sampled per image for the head losses
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # at most this fraction of them foreground
_C.MODEL.ROI_HEADS.OHEM = False  # classification loss over the hardest sampled RoIs only
_C.MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE = 256  # how many hardest RoIs per image OHEM keeps
_C.MODEL.ROI_HEADS.SCORE_THRESH = 0.05  # detections scoring below this are dropped
_C.MODEL.ROI_HEADS.NMS = 0.5  # per-class NMS IoU threshold of the detections
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 100  # at most this many detections per image
_C.MODEL.ROI_HEADS.NUM_CLASSES = 81  # object classes + 1 for background

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.REDUCE_CHANNELS = 256  # 1x1 conv 2048 -> this on C5 before pooling (0 = none)
_C.MODEL.ROI_BOX_HEAD.POOLER = (
    "ModulatedDeformRoIPool"  # "ModulatedDeformRoIPool", "DeformRoIPool", "RoIAlign"
)
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # pooled output size
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2  # samples per bin per axis (0 = adaptive)
_C.MODEL.ROI_BOX_HEAD.POOLER_GAMMA = 0.1  # deformable pooling offset scale (trans_std)
_C.MODEL.ROI_BOX_HEAD.DEFORM_FC_CHANNELS = 1024  # width of the pooling's offset/mask fc branch
_C.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 1024  # width of the two shared fc layers
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False  # one box regression for all classes
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0  # weight of loss_box_reg
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 1.0  # smooth L1 beta of the box regression losses

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.POOLER = "ModulatedDeformRoIPool"  # pooling of the mask head (as above)
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # pooled output size
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 2  # samples per bin per axis (0 = adaptive)
_C.MODEL.ROI_MASK_HEAD.POOLER_GAMMA = 0.1  # deformable pooling offset scale
_C.MODEL.ROI_MASK_HEAD.DEFORM_FC_CHANNELS = 1024  # width of the pooling's offset/mask fc branch
_C.MODEL.ROI_MASK_HEAD.CONV_LAYERS = (256, 256, 256, 256)  # 3x3 convs after pooling
_C.MODEL.ROI_MASK_HEAD.RESOLUTION = 28  # mask logits size (after the 2x deconv)
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD = 0.5  # binarisation threshold when pasting

_C.MODEL.MIMIC = CN()
_C.MODEL.MIMIC.NUM_PER_IMAGE = 32  # at most this many positive proposals per image are mimicked
_C.MODEL.MIMIC.MIN_CROP_SIZE = 16  # crops this size or smaller (input pixels) are skipped
_C.MODEL.MIMIC.CROP_SIZE = 224  # crops are bilinearly resized to this square
_C.MODEL.MIMIC.WEIGHT_COS = 0.1  # weight of loss_mimic_cos (sum of 1 - cosine similarity)
_C.MODEL.MIMIC.WEIGHT_CLS = 0.1  # weight of loss_mimic_cls (cross-entropy of the crop classifier)

# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shorter side in training, picked at random per image
_C.INPUT.MAX_SIZE_TRAIN = 1333  # longer side cap in training
_C.INPUT.MIN_SIZE_TEST = 800  # shorter side at inference
_C.INPUT.MAX_SIZE_TEST = 1333  # longer side cap at inference
_C.INPUT.PIXEL_MEAN = (102.9801, 115.9465, 122.7717)  # BGR mean, 0-255 range
_C.INPUT.PIXEL_STD = (1.0, 1.0, 1.0)  # BGR std, 0-255 range
_C.INPUT.TO_BGR255 = True  # images enter the model as BGR 0-255 (False: RGB 0-1)
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5  # probability of a horizontal flip in training
_C.INPUT.BRIGHTNESS = 0.0  # colour jitter strengths in training (0 = off)
_C.INPUT.CONTRAST = 0.0  # colour jitter contrast
_C.INPUT.SATURATION = 0.0  # colour jitter saturation
_C.INPUT.HUE = 0.0  # colour jitter hue
# Factors by which a whole training batch is rescaled after Resize, one per iteration drawn from
# (SEED, iteration); () = off (detection/data/batch_scale.py). A batch costs what its padded size
# does, so unlike several MIN_SIZE_TRAIN sizes (per image) the smaller factors save time.
_C.INPUT.BATCH_SCALES_TRAIN = ()
_C.INPUT.BATCH_SCALES_UNTIL = 1.0  # rescaled share of SOLVER.MAX_ITER, from the start (1 = all)

# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.ROOT = "datasets"  # folder the catalog resolves dataset names under
_C.DATASETS.TRAIN = ()  # catalog names of the training sets (concatenated)
_C.DATASETS.TEST = ()  # catalog names of the evaluation sets
# Extra COCO-format sets: ((name, annotation file, image folder), ...), paths relative to ROOT
_C.DATASETS.EXTRA = ()
_C.DATASETS.SHAPES = CN()
_C.DATASETS.SHAPES.NUM_TRAIN = 2000  # images generated for shapes_train when missing
_C.DATASETS.SHAPES.NUM_VAL = 200  # images generated for shapes_val when missing
_C.DATASETS.SHAPES.NUM_TEST = 500  # held-out images generated for shapes_test when first named
_C.DATASETS.SHAPES.MIN_SIZE = 128  # smallest generated image side
_C.DATASETS.SHAPES.MAX_SIZE = 256  # largest generated image side
_C.DATASETS.SHAPES.SEED = 0  # generator seed
_C.DATASETS.SKIP_BAD_IMAGES = True  # unreadable images are logged and skipped (False: raise)

# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2  # loader worker processes per rank
_C.DATALOADER.SIZE_DIVISIBILITY = 0  # batch padded to a multiple of this (0 = no rounding)
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch images of like aspect ratio together

# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.MAX_ITER = 90000  # training iterations
_C.SOLVER.BASE_LR = 0.02  # learning rate for IMS_PER_BATCH images
_C.SOLVER.BIAS_LR_FACTOR = 2.0  # bias parameters get BASE_LR times this
_C.SOLVER.OFFSET_LR_FACTOR = 0.1  # offset/mask predictors get BASE_LR times this (DCNv2 paper)
_C.SOLVER.OPTIMIZER = "SGD"  # "SGD" (with MOMENTUM) or "AdamW" (with BETAS, decoupled decay)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.BETAS = (0.9, 0.999)  # AdamW moment decay rates
_C.SOLVER.WEIGHT_DECAY = 0.0001  # L2 weight decay
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0  # weight decay of biases
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of normalisation parameters
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR" (to BASE_LR_END)
_C.SOLVER.BASE_LR_END = 0.0  # WarmupCosineLR: learning rate at MAX_ITER
_C.SOLVER.GAMMA = 0.1  # learning-rate factor at each step
_C.SOLVER.STEPS = (60000, 80000)  # iterations at which the learning rate drops
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3  # learning rate at iteration 0, relative to BASE_LR
_C.SOLVER.WARMUP_ITERS = 500  # iterations of warmup
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.CLIP_GRAD_NORM = 0.0  # clip the global gradient norm to this (0 = off)
_C.SOLVER.SKIP_NONFINITE_STEPS = (
    0  # non-finite loss/gradients: 0 = stop, N = skip up to N steps in a row
)
_C.SOLVER.IMS_PER_BATCH = 16  # images per iteration, over all ranks (the global batch)
_C.SOLVER.CHECKPOINT_PERIOD = 2500  # iterations between checkpoints in model/
_C.SOLVER.CHECKPOINT_KEEP = 3  # periodic checkpoints kept in model/ (older ones rotated away)
_C.SOLVER.SAVE_PERIOD = 0  # iterations between milestone checkpoints in save/ (0 = none)
_C.SOLVER.TEST_PERIOD = 0  # iterations between evaluations on DATASETS.TEST (0 = none)
_C.SOLVER.LOG_PERIOD = 20  # iterations between log lines
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # mixed precision on CUDA through torch.amp
_C.SOLVER.AMP.DTYPE = "bfloat16"  # "bfloat16" or "float16" (float16 uses a grad scaler)

# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.IMS_PER_BATCH = 8  # images per inference batch, over all ranks
_C.TEST.SCORE_THRESHOLD_VIS = 0.5  # detections drawn by tools/infer.py score at least this
