"""Images and an eager counter shared by the deployment tests (tests/deploy)."""

import torch

# (H, W, seed) of the test images by role, for `detector_onnx`: "none" has proposals but no
# detection (the score threshold is set between its best score and the lowest best score of
# "with", "multiple" and "odd", which have detections), "empty" (< 50 px) no proposal at all;
# sizes: multiples of 16 and not
ROLES = {
    "with": (80, 112, 3),
    "none": (71, 53, 2),
    "multiple": (96, 64, 4),
    "odd": (71, 53, 1),
    "empty": (40, 44, 5),
}


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A normalised random `[1, 3, h, w]` image."""
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 50.0


def role_image(role: str) -> torch.Tensor:
    h, w, seed = ROLES[role]
    return image(h, w, seed=seed)


class Counter:
    """Runs a DetectorForExport eagerly: `(proposals, detections, outputs)` of one image."""

    def __init__(self, module) -> None:
        self.module, self.proposals = module, []
        # keeps the BoxList (the hook also runs under torch.export, where len() would guard)
        module.model.rpn.register_forward_hook(lambda m, i, o: self.proposals.append(o[0][0]))

    def __call__(self, x: torch.Tensor) -> tuple:
        self.proposals.clear()
        with torch.no_grad():
            out = self.module(x)
        return len(self.proposals[0]), len(out[0]), out
