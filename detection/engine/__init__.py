"""Training loop, inference, COCO evaluation and checkpointing.

The names below load on first use (PEP 562), so that `detection.engine.predictor` can be
imported without the model and training code (the ONNX deployment path, docs/deployment.md).
"""

import importlib

_EXPORTS = {
    "Checkpointer": "detection.engine.checkpointer",
    "do_coco_evaluation": "detection.engine.coco_eval",
    "evaluate_predictions_on_coco": "detection.engine.coco_eval",
    "compute_on_dataset": "detection.engine.inference",
    "inference": "detection.engine.inference",
    "HookBase": "detection.engine.train_loop",
    "TrainLoop": "detection.engine.train_loop",
    "TrainOptions": "detection.engine.trainer",
    "do_train": "detection.engine.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detection.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
