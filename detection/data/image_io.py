"""Reading image files so that a truncated or corrupt one is caught, not half-decoded.

OpenCV decodes a JPEG cut short without an error (the missing rows come out grey), so
`read_image` first lets Pillow decode the whole file, which raises on a truncated or corrupt
stream, and then decodes the same bytes with OpenCV (the pixels the models were trained on).
"""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # the default; a library that sets it would hide errors


class BadImageError(OSError):
    """An image file that is missing, truncated or not decodable; the message names it."""


def read_image(path: str) -> np.ndarray:
    """The image at `path` as `np.ndarray[H, W, 3]` uint8 BGR; BadImageError when it cannot be
    read completely."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BadImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        raise BadImageError(
            f"not an image file {path} (unknown format or corrupt header)"
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise BadImageError(f"corrupt or truncated image {path} ({exc})") from None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImageError(f"corrupt image {path} (OpenCV cannot decode it)")
    return image


def read_image_or_skip(path: str, skip: bool, logger: logging.Logger) -> np.ndarray | None:
    """`read_image`; with `skip` a bad image logs a warning naming it and gives None."""
    try:
        return read_image(path)
    except BadImageError as exc:
        if not skip:
            raise
        logger.warning("%s: skipped", exc)
        return None
