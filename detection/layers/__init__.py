
# Modeling helpers (pure PyTorch; no compiled ops needed)
from detection.layers.batch_norm import FrozenBatchNorm2d  # noqa: E402,F401
from detection.layers.misc import Conv2d, ConvTranspose2d, Linear  # noqa: E402,F401
from detection.layers.norm import get_norm  # noqa: E402,F401
