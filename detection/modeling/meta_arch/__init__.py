"""The detector (`GeneralizedRCNN`), its builder and the state-dict key upgrade of old
checkpoints."""

from detection.modeling.meta_arch.build import (
    META_ARCHITECTURES,
    build_detection_model,
    check_model_config,
)
from detection.modeling.meta_arch.generalized_rcnn import GeneralizedRCNN
from detection.modeling.meta_arch.state_dict import upgrade_key, upgrade_state_dict

__all__ = [
    "GeneralizedRCNN",
    "META_ARCHITECTURES",
    "build_detection_model",
    "check_model_config",
    "upgrade_key",
    "upgrade_state_dict",
]
