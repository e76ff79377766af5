"""The one place where the detector's state-dict keys of older checkpoints are mapped to today's.

Before the RoI heads were composed under `roi_heads` (issue 14), checkpoints held
`roi_box_head.feature_extractor.reduce_conv.*` (the C5 reduce conv, now owned by `ROIHeads`),
`roi_box_head.*` and `roi_mask_head.*`. `upgrade_state_dict` renames those keys; a state dict
that already uses today's names (or any other module's) comes back unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict

# (old prefix, new prefix), the first match wins
_RENAMES = (
    ("roi_box_head.feature_extractor.reduce_conv.", "roi_heads.reduce_conv."),
    ("roi_box_head.", "roi_heads.box_head."),
    ("roi_mask_head.", "roi_heads.mask_head."),
)


def upgrade_key(key: str) -> str:
    """Today's name of a GeneralizedRCNN state-dict key (unchanged when already current)."""
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def upgrade_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """`state_dict` with every old key renamed by `upgrade_key`, in the same order."""
    if not any(k.startswith(old) for k in state_dict for old, _ in _RENAMES):
        return state_dict
    return OrderedDict((upgrade_key(k), v) for k, v in state_dict.items())
