"""The model: backbone, RPN, RoI heads and the meta-architecture that composes them."""

from detection.modeling.meta_arch import (
    GeneralizedRCNN,
    build_detection_model,
    check_model_config,
    upgrade_state_dict,
)

__all__ = ["GeneralizedRCNN", "build_detection_model", "check_model_config", "upgrade_state_dict"]
