"""MNIST on disk: the idx file format (read and write) and where the four original files are.

`find_mnist(root)` looks for them in `<root>/mnist/` (e.g. `datasets/mnist`, a link is fine),
then in a previous torchvision download (`<root>/MNIST/raw/`), then asks
`torchvision.datasets.MNIST` to download them, and otherwise raises one FileNotFoundError saying
where to put them. Images are `uint8[N, 28, 28]` (white digit on black), labels `int64[N]`.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

# idx type codes (third byte of the magic number) and their big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open_read(path: str):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (gzipped or not, detected from its content) into a native-endian array.

    Raises ValueError naming the file when the header is not an idx header or the data is short.
    """
    with _open_read(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {data[:4]!r})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    shape = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    count = int(np.prod(shape, dtype=np.int64))
    body = data[4 + 4 * ndim :]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {shape} but the file is truncated")
    arr = np.frombuffer(body, dtype=dtype, count=count).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
    """Write `array` as an idx file; gzipped when `path` ends with `.gz`.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (stored big-endian).
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise ValueError(f"write_idx: array dtype {array.dtype} has no idx type code")
    if array.ndim > 255:
        raise ValueError("write_idx: array has more than 255 dimensions")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with gzip.open(tmp, "wb", compresslevel=6) if path.endswith(".gz") else open(tmp, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes())
    os.replace(tmp, path)


def _find_idx(root: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            return path
    return None


def load_idx_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `uint8[N, 28, 28]` and labels `int64[N]` of `split` ("train" or "test") from `root`."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = [_find_idx(root, name) for name in SPLIT_FILES[split]]
    missing = [n for n, p in zip(SPLIT_FILES[split], paths) if p is None]
    if missing:
        raise FileNotFoundError(f"{root}: missing idx file(s) {missing} (plain or .gz)")
    images, labels = read_idx(paths[0]), read_idx(paths[1]).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"{root}: {split} images {images.shape} do not match labels {labels.shape}"
        )
    return images.astype(np.uint8), labels


def _has_split_files(root: str) -> bool:
    return all(_find_idx(root, n) for pair in SPLIT_FILES.values() for n in pair)


def mnist_help(root: str) -> str:
    """Where to put the MNIST files (for error messages)."""
    names = [n + ".gz" for pair in SPLIT_FILES.values() for n in pair]
    return (
        f"put the original MNIST idx files ({', '.join(names)}, gzipped or not) in "
        f"{os.path.abspath(os.path.join(root, 'mnist'))}/ (a link to a folder holding them is "
        "fine), or let torchvision download them when the network allows; `--data synthetic` "
        "needs no download"
    )


def find_mnist(root: str, download: bool = True) -> tuple[str, str]:
    """(folder holding the four MNIST idx files, how it was found) under data root `root`.

    Looks in `<root>/mnist/` ("datasets/mnist" by default), then in `<root>/MNIST/raw/` (where a
    previous torchvision download put them); with `download`, asks `torchvision.datasets.MNIST`
    to download into `<root>/`. Raises FileNotFoundError saying where to put the files (and why
    the download failed) when all of that fails.
    """
    local = os.path.join(root, "mnist")
    if _has_split_files(local):
        return local, "local"
    raw = os.path.join(root, "MNIST", "raw")
    if _has_split_files(raw):
        return raw, "torchvision download (cached)"
    reason = "download not attempted"
    if download:
        try:
            import torchvision

            for train in (True, False):
                torchvision.datasets.MNIST(root, train=train, download=True)
            if _has_split_files(raw):
                return raw, "torchvision download"
            reason = f"torchvision's download left no idx files in {raw}"
        except Exception as exc:  # noqa: BLE001 (no network, proxy, bad mirror: all mean absent)
            reason = "download failed: " + " ".join(str(exc).split())[:300]
    raise FileNotFoundError(f"MNIST not found ({reason}); {mnist_help(root)}")


# Decompressed splits, keyed by the files' paths, inodes, sizes and mtimes (a changed or replaced
# file is re-read):
# the tools and tests read the same 55 MB of idx data several times per process.
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_CACHE_MAX = 4


def _file_key(root: str, split: str) -> tuple | None:
    paths = [_find_idx(root, name) for name in SPLIT_FILES.get(split, ())]
    if not paths or None in paths:
        return None
    stats = [os.stat(p) for p in paths]
    return tuple(
        (os.path.realpath(p), st.st_ino, st.st_size, st.st_mtime_ns) for p, st in zip(paths, stats)
    )


def load_mnist(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST `split` from the folder `root` holding the idx files (see `find_mnist`).

    Each call returns fresh arrays (copies of an in-process cache of the decompressed files)."""
    key = _file_key(root, split)
    if key is None or key not in _CACHE:
        try:
            arrays = load_idx_split(root, split)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{root}: the MNIST idx files are missing; {mnist_help(os.path.dirname(root))}"
            ) from None
        if key is None:
            return arrays
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = arrays
    images, labels = _CACHE[key]
    return images.copy(), labels.copy()
