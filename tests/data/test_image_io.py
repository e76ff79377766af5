"""Truncated and corrupt image files are caught, not half-decoded (issue #15): OpenCV alone
decodes a JPEG cut short into an image whose missing rows are filled in, without an error."""

import logging

import cv2
import numpy as np
import pytest

from detection.data.image_io import BadImageError, read_image, read_image_or_skip


def _noise(h=120, w=160, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


@pytest.fixture()
def images(tmp_path):
    img = _noise()
    good_jpg, good_png = tmp_path / "good.jpg", tmp_path / "good.png"
    cv2.imwrite(str(good_jpg), img)
    cv2.imwrite(str(good_png), img)
    data = good_jpg.read_bytes()
    cut_jpg = tmp_path / "cut.jpg"
    cut_jpg.write_bytes(data[: len(data) * 2 // 3])
    png = good_png.read_bytes()
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png[: len(png) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    return {
        "img": img,
        "good_jpg": good_jpg,
        "good_png": good_png,
        "cut_jpg": cut_jpg,
        "cut_png": cut_png,
        "junk": junk,
        "missing": tmp_path / "missing.png",
    }


def test_opencv_alone_half_decodes_a_cut_jpeg(images):
    """The failure this module exists for: cv2.imread returns an image for the cut file."""
    assert cv2.imread(str(images["cut_jpg"])) is not None


def test_good_images_read_as_opencv_reads_them(images):
    for key in ("good_jpg", "good_png"):
        got = read_image(str(images[key]))
        assert np.array_equal(got, cv2.imread(str(images[key]), cv2.IMREAD_COLOR))
    assert np.array_equal(read_image(str(images["good_png"])), images["img"])


@pytest.mark.parametrize("key", ["cut_jpg", "cut_png", "junk", "missing"])
def test_bad_images_raise_naming_the_file(images, key):
    path = str(images[key])
    with pytest.raises(BadImageError, match=path.replace(".", r"\.")):
        read_image(path)


def test_skip_warns_naming_the_file(images, caplog):
    logger = logging.getLogger("detection.test_image_io")
    with caplog.at_level(logging.WARNING, logger="detection.test_image_io"):
        assert read_image_or_skip(str(images["cut_jpg"]), skip=True, logger=logger) is None
    assert "cut.jpg" in caplog.text and "skipped" in caplog.text
    with pytest.raises(BadImageError, match="cut.jpg"):
        read_image_or_skip(str(images["cut_jpg"]), skip=False, logger=logger)
