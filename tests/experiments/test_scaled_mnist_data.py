"""idx files, synthetic digits, the scale transform and the missing-MNIST error."""

import gzip
import os

import numpy as np
import pytest

from detection.experiments.scaled_mnist import data as D


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(2 * 3 * 5) * 7 - 11).reshape(2, 3, 5)
    arr = arr % 256 if dtype == np.uint8 else arr / (4 if dtype in (np.float32, np.float64) else 1)
    arr = arr.astype(dtype)
    path = str(tmp_path / name)
    D.write_idx(path, arr)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == name.endswith(".gz")
    back = D.read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_mnist_format(tmp_path):
    # The header of an MNIST image file: 0x00000803, then N, rows, cols as big-endian int32.
    path = str(tmp_path / "x")
    D.write_idx(path, np.zeros((4, 28, 28), np.uint8))
    raw = open(path, "rb").read()
    assert raw[:4] == bytes([0, 0, 8, 3])
    assert [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3)] == [4, 28, 28]
    assert len(raw) == 16 + 4 * 28 * 28


def test_read_idx_rejects_garbage_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an idx file"):
        D.read_idx(str(bad))
    path = str(tmp_path / "t.gz")
    D.write_idx(path, np.ones((3, 4), np.uint8))
    raw = gzip.decompress(open(path, "rb").read())
    (tmp_path / "short").write_bytes(raw[:-2])
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(str(tmp_path / "short"))


def test_mnist_reader_finds_plain_and_gz(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    root = tmp_path / "mnist"
    D.write_idx(str(root / "t10k-images-idx3-ubyte"), imgs)
    D.write_idx(str(root / "t10k-labels-idx1-ubyte.gz"), labels)
    got_i, got_l = D.load_mnist(str(root), "test")
    np.testing.assert_array_equal(got_i, imgs)
    np.testing.assert_array_equal(got_l, labels.astype(np.int64))
    # the in-process cache hands out copies, and a rewritten file is read again
    got_i[:] = 0
    np.testing.assert_array_equal(D.load_mnist(str(root), "test")[0], imgs)
    D.write_idx(str(root / "t10k-images-idx3-ubyte"), imgs[::-1])
    np.testing.assert_array_equal(D.load_mnist(str(root), "test")[0], imgs[::-1])


def test_missing_mnist_error_says_where_and_what(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        D.load_data("mnist", str(tmp_path), 10, 10, 0, download=False)
    msg = str(info.value)
    assert os.path.join(str(tmp_path), "mnist") in msg
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "--data synthetic",
    ):
        assert name in msg


def test_synthetic_deterministic_and_prefix_stable():
    a_img, a_lbl = D.generate_synthetic(12, "train", seed=3)
    b_img, b_lbl = D.generate_synthetic(12, "train", seed=3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lbl, b_lbl)
    p_img, _ = D.generate_synthetic(5, "train", seed=3)
    np.testing.assert_array_equal(p_img, a_img[:5])
    c_img, _ = D.generate_synthetic(12, "train", seed=4)
    t_img, _ = D.generate_synthetic(12, "test", seed=3)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_img, t_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (12, 28, 28)
    assert a_lbl.min() >= 0 and a_lbl.max() <= 9
    for img in a_img:  # a visible digit that does not touch the border
        assert img.max() > 200
        assert (
            img[0].max() == 0
            and img[-1].max() == 0
            and img[:, 0].max() == 0
            and img[:, -1].max() == 0
        )


def test_synthetic_cache_written_in_idx_format(tmp_path):
    sets, info = D.load_data("synthetic", str(tmp_path), 8, 4, seed=1)
    assert info["data"] == "synthetic" and info["train_size"] == 8
    cache = D.synthetic_dir(str(tmp_path), 1, 8, 4)
    img, lbl = D.load_idx_split(cache, "train")
    np.testing.assert_array_equal(img, sets["train"][0])
    np.testing.assert_array_equal(lbl, sets["train"][1])
    assert os.path.exists(os.path.join(cache, "t10k-images-idx3-ubyte.gz"))
    again, _ = D.load_data("synthetic", str(tmp_path), 8, 4, seed=1)  # from the cache
    np.testing.assert_array_equal(again["test"][0], sets["test"][0])


def _span(img, axis):
    """First and last row (axis 0) or column (axis 1) with a pixel above 60."""
    idx = np.nonzero((img > 60).any(axis=1 - axis))[0]
    return idx.min(), idx.max()


def _bbox(img):
    """Height and width of the pixels above 60."""
    return tuple(hi - lo + 1 for lo, hi in (_span(img, 0), _span(img, 1)))


def test_scale_transform():
    imgs, _ = D.generate_synthetic(6, "test", seed=0)
    for img in imgs:
        np.testing.assert_array_equal(D.scale_image(img, 1.0), img)
        small = D.scale_image(img, 0.5)
        assert small.shape == (28, 28) and small.dtype == np.uint8
        (h, w), (sh, sw) = _bbox(img), _bbox(small)
        assert abs(sh - 0.5 * h) <= 2 and abs(sw - 0.5 * w) <= 2, ((h, w), (sh, sw))
        big = D.scale_image(img, 1.5)
        assert big.shape == (28, 28)
        # 1.5x is 42 px, cropped 7 px on every side: rows y0..y1 cover [1.5 y0, 1.5 (y1 + 1))
        # of the 42, [1.5 y0 - 7, 1.5 (y1 + 1) - 7) clipped to [0, 28) after the crop
        for got, (lo, hi) in zip(_bbox(big), (_span(img, 0), _span(img, 1))):
            expected = min(28.0, 1.5 * (hi + 1) - 7) - max(0.0, 1.5 * lo - 7)
            assert abs(got - expected) <= 2, (got, expected)
    # centred: a centred square stays centred
    sq = np.zeros((28, 28), np.uint8)
    sq[10:18, 10:18] = 255
    ys, xs = np.nonzero(D.scale_image(sq, 0.5) > 127)
    assert abs(ys.mean() - 13.5) <= 0.5 and abs(xs.mean() - 13.5) <= 0.5
    with pytest.raises(ValueError, match="scale"):
        D.scale_image(sq, 0)


def test_scaled_dataset_ranges_and_fixed_scale():
    imgs, lbls = D.generate_synthetic(4, "test", seed=0)
    ds = D.ScaledDigits(imgs, lbls, scale=1.0)
    x, y = ds[2]
    assert x.shape == (1, 28, 28) and y == lbls[2]
    np.testing.assert_allclose(x[0].numpy(), D.to_tensor(imgs[2])[0].numpy())
    with pytest.raises(ValueError, match="scale_min"):
        D.ScaledDigits(imgs, lbls, 1.5, 0.5)
    assert D.TEST_SCALES == (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
