"""Model files (dense and CSR storage) and sparse inference."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from l1sparse.export import load, read_metadata, save_model
from l1sparse.models import mlp
from l1sparse.sparse_inference import SparseLinear, to_sparse


def _sparsify(net: nn.Module, zero_fraction: float, seed: int = 0) -> nn.Module:
    """Zero a random ``zero_fraction`` of every weight matrix, in place, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                k = round(zero_fraction * w.numel())
                idx = torch.randperm(w.numel(), generator=g)[:k]
                w.view(-1)[idx] = 0.0
    return net


@pytest.fixture(scope="module")
def lenet():
    """LeNet-300-100 (784-300-100-10) with 95 % of every weight matrix exactly zero."""
    return _sparsify(mlp(784, [300, 100], 10, seed=0), 0.95).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return {b: torch.randn(b, 784, generator=g) for b in (1, 256)}


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["dense", "csr"])
def test_round_trip_is_exact(tmp_path, lenet, inputs, storage):
    path = tmp_path / f"net.{storage}.safetensors"
    size = save_model(lenet, path, format=storage)
    assert size == os.path.getsize(path)
    loaded = load(path)
    assert type(loaded) is type(lenet)
    assert loaded.config == lenet.config
    assert _states_equal(loaded, lenet)
    for name in ("fc1", "fc2", "fc3"):  # exact zeros at exactly the same places
        assert torch.equal(getattr(loaded, name).weight == 0, getattr(lenet, name).weight == 0)
    with torch.no_grad():
        for x in inputs.values():
            assert torch.equal(loaded(x), lenet(x))
    assert not any(f.name.endswith(".tmp") for f in tmp_path.iterdir())  # no temp file left


def test_csr_file_smaller_than_dense_at_95_percent_zeros(tmp_path, lenet):
    dense = save_model(lenet, tmp_path / "d.safetensors", format="dense")
    csr = save_model(lenet, tmp_path / "c.safetensors", format="csr")
    # float32 values + int32 column indices: ~8 bytes per nonzero instead of 4 per weight.
    assert csr < 0.2 * dense


def test_csr_layout_in_file(tmp_path, lenet):
    path = tmp_path / "c.safetensors"
    save_model(lenet, path, format="csr")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        col = f.get_tensor("fc1.weight.col_indices")
        crow = f.get_tensor("fc1.weight.crow_indices")
        values = f.get_tensor("fc1.weight.values")
    assert "fc1.weight" not in keys and "fc1.bias" in keys
    assert col.dtype == torch.int32 and crow.dtype == torch.int32
    assert values.numel() == int(torch.count_nonzero(lenet.fc1.weight))
    assert crow.numel() == 301


def test_round_trip_all_zero_layer_and_float64(tmp_path):
    net = mlp(5, [4], 3, seed=2).double()
    with torch.no_grad():
        net.fc1.weight.zero_()
    path = tmp_path / "z.safetensors"
    save_model(net, path, format="csr")
    loaded = load(path)
    assert loaded.fc1.weight.dtype == torch.float64
    assert _states_equal(loaded, net)


def test_save_replaces_existing_file(tmp_path, lenet):
    path = tmp_path / "net.safetensors"
    path.write_bytes(b"old content")
    save_model(lenet, path, format="csr")
    assert _states_equal(load(path), lenet)


def test_save_accepts_a_to_sparse_model(tmp_path, lenet):
    fast = to_sparse(lenet, force=True)
    path = tmp_path / "fast.safetensors"
    save_model(fast, path, format="csr")
    assert _states_equal(load(path), lenet)


# --- metadata ----------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["dense", "csr"])
def test_metadata_round_trip(tmp_path, lenet, storage):
    extra = {"lambda": [0.1, 0.2, 0.3], "nnz": 13310, "note": "ℓ1 run", "nested": {"a": None}}
    path = tmp_path / "m.safetensors"
    save_model(lenet, path, format=storage, metadata=extra)
    meta = read_metadata(path)
    assert meta["format"] == "l1sparse" and meta["version"] == "1"
    assert meta["storage"] == storage
    assert meta["architecture"] == lenet.config
    assert meta["extra"] == extra
    if storage == "csr":
        assert meta["shapes"] == {"fc1.weight": [300, 784], "fc2.weight": [100, 300],
                                  "fc3.weight": [10, 100]}
    else:
        assert meta["shapes"] == {}


def test_metadata_default_extra_is_empty(tmp_path, lenet):
    path = tmp_path / "m.safetensors"
    save_model(lenet, path)
    assert read_metadata(path)["extra"] == {}


# --- errors ------------------------------------------------------------------------------------

def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_metadata(path)


def test_load_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a safetensors file at all" * 3)
    with pytest.raises(ValueError, match=r"garbage\.safetensors.*not a valid safetensors"):
        load(path)


def test_load_truncated_file(tmp_path, lenet):
    path = tmp_path / "trunc.safetensors"
    save_model(lenet, path, format="csr")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc\.safetensors.*truncated or corrupt"):
        load(path)


def test_load_safetensors_without_l1sparse_metadata(tmp_path, lenet):
    path = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in lenet.state_dict().items()}, str(path),
              metadata={"producer": "someone else"})
    with pytest.raises(ValueError, match=r"foreign\.safetensors.*not an l1sparse model file"):
        load(path)
    with pytest.raises(ValueError, match="not an l1sparse model file"):
        read_metadata(path)


def test_load_missing_tensor(tmp_path):
    net = mlp(4, [3], 2, seed=0)
    path = tmp_path / "partial.safetensors"
    tensors = {k: v.contiguous() for k, v in net.state_dict().items() if k != "fc2.bias"}
    meta = {"format": "l1sparse", "version": "1", "storage": "dense",
            "architecture": json.dumps(net.config), "shapes": "{}", "extra": "{}"}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError, match=r"partial\.safetensors.*lacks.*fc2\.bias"):
        load(path)


def test_load_unknown_version(tmp_path):
    net = mlp(4, [3], 2, seed=0)
    path = tmp_path / "future.safetensors"
    meta = {"format": "l1sparse", "version": "99", "storage": "dense",
            "architecture": json.dumps(net.config), "shapes": "{}", "extra": "{}"}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(ValueError, match="version '99'"):
        load(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "coo"}, "'format' parameter must be one of"),
    ({"metadata": {"x": object()}}, "'metadata' parameter must be JSON-serialisable"),
    ({"metadata": [1, 2]}, "'metadata' parameter must be a mapping"),
])
def test_save_bad_arguments(tmp_path, lenet, kwargs, message):
    with pytest.raises(ValueError, match=message):
        save_model(lenet, tmp_path / "x.safetensors", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_model_without_config(tmp_path):
    with pytest.raises(ValueError, match="'model' parameter must have a 'config'"):
        save_model(nn.Linear(3, 2), tmp_path / "x.safetensors")


def test_save_missing_directory(tmp_path, lenet):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_model(lenet, tmp_path / "no" / "such" / "x.safetensors")


# --- sparse inference --------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 256])
def test_to_sparse_forced_matches_dense(lenet, inputs, batch):
    fast = to_sparse(lenet, batch_size=batch, force=True)
    assert all(isinstance(getattr(fast, n), SparseLinear) for n in ("fc1", "fc2", "fc3"))
    assert all(r["chosen"] == "sparse" for r in fast.sparse_layers.values())
    with torch.no_grad():
        x = inputs[batch]
        out, ref = fast(x), lenet(x)
    assert out.shape == ref.shape == (batch, 10)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_to_sparse_does_not_modify_input(lenet, inputs):
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    types = [type(m) for m in lenet.modules()]
    lenet.train()
    try:
        to_sparse(lenet, force=True)
        to_sparse(lenet, batch_size=4, repeats=2)
        assert lenet.training
    finally:
        lenet.eval()
    assert [type(m) for m in lenet.modules()] == types
    assert not hasattr(lenet, "sparse_layers")
    after = lenet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("batch", [1, 256])
def test_to_sparse_timed_choice_matches_dense(lenet, inputs, batch):
    fast = to_sparse(lenet, batch_size=batch, repeats=3)
    assert set(fast.sparse_layers) == {"fc1", "fc2", "fc3"}
    for name, record in fast.sparse_layers.items():
        assert record["dense_us"] > 0 and record["sparse_us"] > 0
        assert record["chosen"] in ("sparse", "dense")
        expected = SparseLinear if record["chosen"] == "sparse" else nn.Linear
        assert type(getattr(fast, name)) is expected
    with torch.no_grad():
        torch.testing.assert_close(fast(inputs[batch]), lenet(inputs[batch]), rtol=0, atol=1e-5)


def test_to_sparse_threshold_and_force_false(lenet):
    net = mlp(784, [300, 100], 10, seed=0)  # dense: no zeros
    kept = to_sparse(net, force=True)
    assert all(type(getattr(kept, n)) is nn.Linear for n in ("fc1", "fc2", "fc3"))
    assert all(r["dense_us"] is None for r in kept.sparse_layers.values())
    every = to_sparse(net, force=True, min_zero_fraction=0.0)
    assert all(isinstance(getattr(every, n), SparseLinear) for n in ("fc1", "fc2", "fc3"))
    none = to_sparse(lenet, force=False)
    assert all(r["chosen"] == "dense" for r in none.sparse_layers.values())


def test_to_sparse_twice_and_deepcopy(lenet, inputs):
    import copy

    fast = to_sparse(lenet, force=True)
    again = copy.deepcopy(fast)
    assert isinstance(again.fc1, SparseLinear)
    with torch.no_grad():
        assert torch.equal(again(inputs[1]), fast(inputs[1]))
        assert torch.equal(to_sparse(fast, force=True)(inputs[1]), fast(inputs[1]))


def test_sparse_linear_shapes_and_round_trip():
    g = torch.Generator().manual_seed(3)
    lin = _sparsify(nn.Sequential(nn.Linear(7, 5)), 0.6)[0]
    sp = SparseLinear.from_linear(lin)
    assert sp.nnz == int(torch.count_nonzero(lin.weight))
    with torch.no_grad():
        for shape in [(7,), (3, 7), (2, 4, 7)]:
            x = torch.randn(*shape, generator=g)
            torch.testing.assert_close(sp(x), lin(x), rtol=0, atol=1e-6)
        nobias = SparseLinear(lin.weight)
        torch.testing.assert_close(nobias(x), x @ lin.weight.T, rtol=0, atol=1e-6)
    back = sp.to_linear()
    assert torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "'batch_size' parameter must be a positive integer"),
    ({"repeats": 2.5}, "'repeats' parameter must be a positive integer"),
    ({"min_zero_fraction": 1.5}, r"'min_zero_fraction' parameter must be in \[0, 1\]"),
    ({"force": "yes"}, "'force' parameter must be None, True or False"),
])
def test_to_sparse_bad_arguments(lenet, kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_sparse(lenet, **kwargs)


def test_sparse_linear_bad_input():
    sp = SparseLinear(torch.eye(3))
    with pytest.raises(ValueError, match="expects inputs with 3 features"):
        sp(torch.ones(2, 4))
    with pytest.raises(ValueError, match="'weight' parameter must be a 2-D matrix"):
        SparseLinear(torch.ones(3))
