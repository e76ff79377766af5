"""Training loop, inference, COCO evaluation and checkpointing."""

from detection.engine.checkpointer import Checkpointer
from detection.engine.coco_eval import do_coco_evaluation, evaluate_predictions_on_coco
from detection.engine.inference import compute_on_dataset, inference
from detection.engine.train_loop import HookBase, TrainLoop
from detection.engine.trainer import TrainOptions, do_train

__all__ = [
    "Checkpointer",
    "HookBase",
    "TrainLoop",
    "TrainOptions",
    "compute_on_dataset",
    "do_coco_evaluation",
    "do_train",
    "evaluate_predictions_on_coco",
    "inference",
]
