"""MNIST and Fashion-MNIST from IDX files: where they are looked for, and the download (only
when asked for, verified against the published checksums)."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .dataset import Dataset, _to_dataset
from .idx import read_idx

__all__ = [
    "MNIST_NAMES",
    "MNIST_FILES",
    "MNIST_RESOURCES",
    "SYSTEM_DATA_DIRS",
    "default_cache_dir",
    "load_mnist_format",
]

log = logging.getLogger(__name__)

MNIST_NAMES = ("mnist", "fashion-mnist")

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""File names (PyTorch's layout), each optionally with ``.gz``."""

MNIST_RESOURCES: dict[str, dict] = {
    # md5 of the published .gz files, as listed by torchvision.datasets.MNIST / FashionMNIST
    # and, for Fashion-MNIST, in the table of https://github.com/zalandoresearch/fashion-mnist.
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "torchvision": "MNIST",
    },
    "fashion-mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "torchvision": "FashionMNIST",
    },
}

SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {
    # Debian/Ubuntu: `apt install dataset-fashion-mnist` installs the four .gz files here
    # (recompressed by Debian, so their md5 differs from the published one; the IDX contents
    # are what is checked).
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
"""Read-only system locations searched for each data set (after ``data_dir``)."""

DOWNLOAD_TIMEOUT_S = 30.0


def default_cache_dir(name: str) -> Path:
    """Where downloaded data set ``name`` lives: ``$L1SPARSE_DATA/<name>`` when that variable
    is set, else ``$XDG_CACHE_HOME/l1sparse/<name>``, else ``~/.cache/l1sparse/<name>``."""
    root = os.environ.get("L1SPARSE_DATA")
    if root:
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "l1sparse" / name


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_dir(directory: Path) -> dict[str, Path] | None:
    """The four files in ``directory`` (raw preferred over .gz), or None if any is missing."""
    found = {}
    for key, stem in MNIST_FILES.items():
        f = _find_file(directory, stem)
        if f is None:
            return None
        found[key] = f
    return found


def _candidate_dirs(directory: Path, name: str) -> list[Path]:
    """``directory`` itself, ``directory/<name>`` and torchvision's ``<Class>/raw`` layout."""
    tv = MNIST_RESOURCES[name]["torchvision"]
    return [directory, directory / name, directory / tv / "raw"]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` (standard library only). Tests replace this function."""
    request = urllib.request.Request(url, headers={"User-Agent": "l1sparse"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)


def _download(name: str, directory: Path) -> None:
    """Fetch the four published .gz files of ``name`` into ``directory``, verifying md5.

    A file is written under a temporary name and renamed only once its checksum matches; a
    mismatch deletes it and raises ValueError. Network failures try the next mirror; when all
    fail, ConnectionError says so.
    """
    spec = MNIST_RESOURCES[name]
    directory.mkdir(parents=True, exist_ok=True)
    for filename, md5 in spec["md5"].items():
        target = directory / filename
        if target.is_file() and _md5(target) == md5:
            continue
        errors = []
        for mirror in spec["mirrors"]:
            url = mirror + filename
            part = directory / f"{filename}.part"
            log.info("downloading %s", url)
            try:
                _fetch(url, part, timeout=DOWNLOAD_TIMEOUT_S)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                part.unlink(missing_ok=True)
                errors.append(f"{url}: {exc}")
                log.warning("download of %s failed: %s", url, exc)
                continue
            found = _md5(part) if part.is_file() else "<no file>"
            if found != md5:
                part.unlink(missing_ok=True)
                raise ValueError(
                    f"Checksum mismatch for {url}: md5 {found}, expected {md5}. The file was "
                    "deleted; try again later or provide the files yourself (data_dir)."
                )
            os.replace(part, target)
            break
        else:
            raise ConnectionError(
                f"Could not download {filename} for {name!r} from any mirror "
                f"({'; '.join(errors)}). If this machine is offline, copy the files into "
                f"{str(directory)!r} or pass data_dir."
            )


def _load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{str(images_path)!r} should hold uint8 images of shape (N, rows, cols); got "
            f"{images.dtype} of shape {images.shape}."
        )
    if labels.ndim != 1:
        raise ValueError(
            f"{str(labels_path)!r} should hold a 1-D array of labels; got shape {labels.shape}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{str(images_path)!r} has {len(images)} images but {str(labels_path)!r} has "
            f"{len(labels)} labels."
        )
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return X, labels.astype(np.int64)


def load_mnist_format(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> Dataset:
    """MNIST or Fashion-MNIST from IDX files: 60,000 training and 10,000 test images.

    Images are returned **flattened** as ``float32`` of shape ``(N, 784)`` with pixel values
    scaled to ``[0, 1]`` (``pixel / 255``, nothing else); labels are ``int64`` in ``0..9``. The
    files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped
    (``.gz``).

    Where the files are looked for, in order:

    1. ``data_dir`` when given — and only there (also ``data_dir/<name>`` and torchvision's
       ``data_dir/MNIST/raw`` or ``data_dir/FashionMNIST/raw``);
    2. for Fashion-MNIST, the Debian package location ``/usr/share/datasets/fashion-mnist``
       (``apt install dataset-fashion-mnist``), see :data:`SYSTEM_DATA_DIRS`;
    3. the user cache :func:`default_cache_dir` (``$L1SPARSE_DATA/<name>``,
       ``$XDG_CACHE_HOME/l1sparse/<name>`` or ``~/.cache/l1sparse/<name>``);
    4. only when ``download=True``: the public mirrors of :data:`MNIST_RESOURCES`, into the
       cache (or into ``data_dir`` when given), each file verified against its published md5.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    data_dir : path-like, optional
    download : bool, optional
        Allow downloading. ``None`` (the default) means no: nothing is fetched implicitly.

    Raises
    ------
    FileNotFoundError
        If the files are nowhere to be found; the message lists the places searched and how
        to provide the files.
    ValueError
        For a corrupted or inconsistent file, or a checksum mismatch on download.
    ConnectionError
        If a download was requested and no mirror could be reached.
    """
    if name not in MNIST_NAMES:
        raise ValueError(f"The 'name' parameter must be one of {list(MNIST_NAMES)}. Got {name!r}.")
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        searched = _candidate_dirs(root, name)
        download_to = root
    else:
        cache = default_cache_dir(name)
        searched = [*SYSTEM_DATA_DIRS.get(name, ()), cache]
        download_to = cache
    files = None
    for directory in searched:
        files = _complete_dir(directory)
        if files is not None:
            break
    if files is None and download:
        _download(name, download_to)
        files = _complete_dir(download_to)
    if files is None:
        where = ", ".join(repr(str(d)) for d in searched)
        hint = (
            f"Put the four files ({', '.join(MNIST_FILES.values())}, optionally .gz) in a "
            "directory and pass it with --data-dir (data_dir=...), "
            f"or place them in {str(default_cache_dir(name))!r}"
        )
        if name == "fashion-mnist":
            hint += ", or install the Debian package dataset-fashion-mnist"
        hint += ", or allow a download (download=True)."
        raise FileNotFoundError(f"The {name} data files were not found (looked in {where}). "
                                + hint)
    log.info("loading %s from %s", name, files["train_images"].parent)
    X_train, y_train = _load_idx_pair(files["train_images"], files["train_labels"])
    X_test, y_test = _load_idx_pair(files["test_images"], files["test_labels"])
    if X_train.shape[1:] != X_test.shape[1:]:
        raise ValueError(
            f"The training images have {X_train.shape[1]} pixels but the test images have "
            f"{X_test.shape[1]} (files in {str(files['train_images'].parent)!r})."
        )
    return _to_dataset(X_train, y_train, X_test, y_test, task="classification", name=name)
