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
    """Zero a random ``zero_fraction`` of every Linear/Conv weight, in place, from a seeded
    generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
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


def test_save_model_with_a_broken_mlp_config(tmp_path):
    net = mlp(4, [3], 2, seed=0)
    net.hidden = [5]  # the config no longer matches the tensors
    with pytest.raises(ValueError, match="state_dict does not match its config|its config "
                                         "implies"):
        save_model(net, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


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


# --- any nn.Module -----------------------------------------------------------------------------

class NamedCNN(nn.Module):
    """A user's own CNN with named attributes: Conv2d, BatchNorm2d (buffers), Conv2d, Linear."""

    def __init__(self, width: int = 6, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, width, 3)
        self.head = nn.Linear(width * 6 * 6, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        return self.head(torch.relu(self.conv2(x)).flatten(1))


def sequential_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


BUILDERS = {"named": NamedCNN, "sequential": sequential_cnn}


def _seeded(make, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


@pytest.fixture(scope="module")
def images():
    return torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(5))


def _trained(kind: str, images) -> nn.Module:
    """A CNN with 80 % of every Conv/Linear weight exactly zero and batch-norm statistics set."""
    net = _sparsify(_seeded(BUILDERS[kind], 0), 0.8, seed=1)
    with torch.no_grad():
        net.train()(images)  # moves the running statistics away from their defaults
    return net.eval()


def _penalised_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{n}.weight": m.weight for n, m in net.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("storage", ["dense", "csr"])
def test_a_users_module_round_trips_into_a_fresh_instance(tmp_path, images, kind, storage):
    net = _trained(kind, images)
    path = tmp_path / f"{kind}.{storage}.safetensors"
    save_model(net, path, format=storage, metadata={"lambda": 0.5})
    fresh = _seeded(BUILDERS[kind], 99)
    assert not _states_equal(fresh, net)  # the test could fail: other weights before loading
    assert load(path, model=fresh) is fresh
    assert not fresh.training
    assert _states_equal(fresh, net)  # every tensor, buffers (running stats, counters) included
    for key, weight in _penalised_weights(net).items():
        assert torch.equal(_penalised_weights(fresh)[key] == 0, weight == 0)  # the exact zeros
    with torch.no_grad():
        assert torch.equal(fresh(images), net(images))

    meta = read_metadata(path)
    assert meta["architecture"] == {} and meta["extra"] == {"lambda": 0.5}
    assert meta["module"] == {"class": type(net).__name__}
    names = ["conv1", "conv2", "head"] if kind == "named" else ["0", "3"]
    assert [layer["name"] for layer in meta["layers"]] == names
    assert [layer["type"] for layer in meta["layers"]] == ["Conv2d"] * (len(names) - 1) + ["Linear"]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    if storage == "csr":
        first = f"{names[0]}.weight"
        assert meta["shapes"][first] == list(net.state_dict()[first].shape)  # 4-D conv kernel
        assert first not in keys and f"{first}.values" in keys
        assert f"{names[0]}.bias" in keys
        if kind == "named":
            assert {"bn.running_mean", "bn.num_batches_tracked"} <= keys  # buffers stay dense
    else:
        assert keys == set(net.state_dict())


def test_csr_file_of_a_cnn_is_smaller(tmp_path, images):
    net = _sparsify(_seeded(lambda: NamedCNN(classes=50), 0), 0.8)  # 12k weights, 80 % zero
    dense = save_model(net, tmp_path / "d.safetensors")
    csr = save_model(net, tmp_path / "c.safetensors", format="csr")
    assert csr < 0.6 * dense  # 20 % of the weights at ~8 bytes each instead of 4


def test_load_without_model_says_to_pass_one(tmp_path, images):
    path = tmp_path / "cnn.safetensors"
    save_model(_trained("named", images), path, format="csr")
    with pytest.raises(ValueError, match=r"cnn\.safetensors.*NamedCNN.*model=NamedCNN\(\)"):
        load(path)
    with pytest.raises(ValueError, match="'model' parameter must be an nn.Module"):
        load(path, model="NamedCNN")


class _Smaller(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.extra = nn.Linear(2, 2)


def test_a_mismatched_module_gives_one_error_listing_every_mismatch(tmp_path, images):
    path = tmp_path / "cnn.safetensors"
    save_model(_trained("named", images), path, format="csr")
    wider = NamedCNN(width=8)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load(path, model=wider)
    message = str(info.value)
    assert "cnn.safetensors" in message and "does not fit the given NamedCNN" in message
    assert "shapes differ" in message
    for key, file_shape, model_shape in [("conv2.weight", (6, 4, 3, 3), (8, 4, 3, 3)),
                                         ("conv2.bias", (6,), (8,)),
                                         ("head.weight", (5, 216), (5, 288))]:
        assert f"{key} (file {file_shape}, module {model_shape})" in message
    assert "conv1.weight" not in message  # what matches is not listed
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())  # untouched

    with pytest.raises(ValueError) as info:
        load(path, model=_Smaller())
    message = str(info.value)
    assert "missing from the file: extra.weight, extra.bias" in message
    assert "in the file but not in the module:" in message
    for key in ("bn.running_var", "conv2.weight", "head.bias"):
        assert key in message.split("not in the module:")[1]


def _readme_snippet() -> str:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Sparse models: files and inference", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    found = [b for b in blocks if "load_file" in b and "model=MyNet()" in b]
    assert len(found) == 1, "the README's plain-PyTorch loading snippet is gone"
    return found[0]


def test_the_readme_snippet_loads_a_users_module_with_and_without_l1sparse(
        tmp_path, images, monkeypatch):
    net = _trained("named", images)
    built = []

    class MyNet(NamedCNN):
        def __init__(self) -> None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(len(built) + 10)  # other weights than net's
                super().__init__()
            built.append(self)

    net.__class__ = MyNet  # the user's class, as the snippet names it
    monkeypatch.chdir(tmp_path)
    namespace = {"net": net, "MyNet": MyNet}
    exec(compile(_readme_snippet(), "README.md", "exec"), namespace)
    assert (tmp_path / "net.safetensors").exists() and (tmp_path / "net.csr.safetensors").exists()
    plain, with_l1sparse = built  # one instance filled by plain PyTorch, one by l1sparse.load
    assert namespace["fresh"] is with_l1sparse
    for loaded in (plain, with_l1sparse):
        assert _states_equal(loaded, net)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(images), net(images))


def test_dense_file_of_an_mlp_loads_in_plain_pytorch(tmp_path, lenet):
    from safetensors.torch import load_file

    path = tmp_path / "mlp.safetensors"
    save_model(lenet, path)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                          nn.ReLU(), nn.Linear(100, 10))
    state = load_file(str(path))
    renamed = {k.replace("fc1", "1").replace("fc2", "3").replace("fc3", "5"): v
               for k, v in state.items()}
    plain.load_state_dict(renamed)
    x = torch.randn(4, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(plain(x), lenet(x))


def test_a_bare_linear_and_float64(tmp_path):
    net = _sparsify(nn.Sequential(_seeded(lambda: nn.Linear(6, 3), 0)), 0.5)[0].double()
    path = tmp_path / "linear.safetensors"
    save_model(net, path, format="csr")
    meta = read_metadata(path)
    # named as the penalised set names it (select_tensors: the key of a root module's weight)
    assert meta["layers"] == [{"name": "weight", "type": "Linear", "weight": "weight",
                               "shape": [3, 6]}]
    fresh = load(path, model=nn.Linear(6, 3, dtype=torch.float64))
    assert _states_equal(fresh, net)
    from l1sparse.export import layer_sparsity

    report = layer_sparsity(path)
    assert [(r.name, r.nnz, r.total) for r in report.layers] == [("weight", 9, 18)]


def test_layer_sparsity_from_the_file_equals_sparsity_of_the_module(tmp_path, lenet, images):
    from l1sparse.export import layer_sparsity
    from l1sparse.sparsity import sparsity

    cnn = _trained("named", images)
    for net in (lenet, cnn):
        for storage in ("dense", "csr"):
            path = tmp_path / f"{storage}.safetensors"
            save_model(net, path, format=storage)
            assert layer_sparsity(path).layers == sparsity(net).layers
    assert sparsity(cnn)["conv2"].nnz == round(0.2 * 6 * 4 * 9)  # known: 80 % zeroed


def test_a_file_written_before_layers_were_recorded_still_reads(tmp_path, lenet):
    from l1sparse.export import layer_sparsity
    from l1sparse.sparsity import sparsity

    path = tmp_path / "old.safetensors"
    meta = {"format": "l1sparse", "version": "1", "storage": "dense",
            "architecture": json.dumps(lenet.config), "shapes": "{}", "extra": "{}"}
    save_file({k: v.contiguous() for k, v in lenet.state_dict().items()}, str(path),
              metadata=meta)
    assert [layer["name"] for layer in read_metadata(path)["layers"]] == ["fc1", "fc2", "fc3"]
    assert layer_sparsity(path).layers == sparsity(lenet).layers
    assert _states_equal(load(path), lenet)


def test_convert_between_storages_without_the_class(tmp_path, images):
    from l1sparse.export import convert, read_state_dict

    net = _trained("named", images)
    csr, dense = tmp_path / "c.safetensors", tmp_path / "d.safetensors"
    save_model(net, csr, format="csr", metadata={"note": "kept"})
    convert(csr, dense, format="dense")
    a, b = read_metadata(csr), read_metadata(dense)
    assert b["storage"] == "dense" and b["shapes"] == {}
    assert {k: a[k] for k in ("architecture", "module", "layers", "extra")} == \
           {k: b[k] for k in ("architecture", "module", "layers", "extra")}
    state = read_state_dict(dense)
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    convert(dense, dense, format="csr")  # in place
    assert read_metadata(dense)["storage"] == "csr"
    assert _states_equal(load(dense, model=NamedCNN()), net)


def test_a_to_sparse_users_module_saves_and_loads_both_ways(tmp_path, images):
    net = _trained("named", images)
    fast = to_sparse(net, force=True)
    assert isinstance(fast.head, SparseLinear)
    path = tmp_path / "fast.safetensors"
    save_model(fast, path, format="csr")
    assert "head.weight" in read_metadata(path)["shapes"]  # SparseLinear's weight as CSR
    assert _states_equal(load(path, model=NamedCNN()), net)
    other = to_sparse(_seeded(NamedCNN, 3), force=True, min_zero_fraction=0.0)
    load(path, model=other)  # SparseLinear layers take the weights of the file
    assert other.head.weight.layout == torch.sparse_csr
    assert other.head.nnz == int(torch.count_nonzero(net.head.weight))
    with torch.no_grad():
        torch.testing.assert_close(other(images), net(images), rtol=0, atol=1e-5)


def test_sparse_linear_loads_a_linear_state_dict():
    lin = _sparsify(nn.Sequential(_seeded(lambda: nn.Linear(5, 4), 0)), 0.5)[0]
    sp = SparseLinear(torch.ones(4, 5), torch.zeros(4))
    sp.load_state_dict(lin.state_dict())
    assert torch.equal(sp.weight.to_dense(), lin.weight) and torch.equal(sp.bias, lin.bias)
    assert sp.nnz == 10
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        sp.load_state_dict(nn.Linear(6, 4).state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key.*extra"):
        sp.load_state_dict({**lin.state_dict(), "extra": torch.ones(1)})


class _WithExtraState(nn.Linear):
    def get_extra_state(self):
        return {"note": "not a tensor"}

    def set_extra_state(self, state):
        pass


def test_save_refuses_what_safetensors_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="'_extra_state' is a dict, not a tensor"):
        save_model(_WithExtraState(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="uninitialised lazy parameter"):
        save_model(nn.LazyLinear(3), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="'model' parameter must be an nn.Module"):
        save_model({"w": torch.ones(2)}, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


# --- the command line on a user's module file ---------------------------------------------------

def test_cli_inspect_a_users_module_from_the_file_alone(tmp_path, images, capsys):
    from l1sparse.cli import main

    net = _trained("named", images)
    path = tmp_path / "cnn.csr.safetensors"
    save_model(net, path, format="csr", metadata={"lambda": [1.0, 2.0, 3.0]})
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "csr storage" in out and "module NamedCNN" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    for name, lam in (("conv1", "1"), ("conv2", "2"), ("head", "3")):
        weight = getattr(net, name).weight
        shape = "x".join(map(str, weight.shape))
        assert rows[name][1:4] == [shape, str(int(torch.count_nonzero(weight))),
                                   str(weight.numel())]
        assert rows[name][5] == lam
    total = sum(int(torch.count_nonzero(w)) for w in _penalised_weights(net).values())
    assert int(rows["all"][1]) == total
    assert "bn" not in rows  # only the penalised layers

    assert main(["inspect", str(path), "--data", "mnist-5k"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--data needs a model that l1sparse can rebuild" in err
    assert "model=NamedCNN()" in err


def test_cli_export_a_users_module_between_storages(tmp_path, images, capsys):
    from safetensors.torch import load_file

    from l1sparse.cli import main

    net = _trained("sequential", images)
    dense = tmp_path / "seq.safetensors"
    save_model(net, dense, metadata={"epochs": 3})
    csr, back = tmp_path / "seq.csr.safetensors", tmp_path / "back.safetensors"
    assert main(["export", str(dense), "--format", "csr", "--out", str(csr)]) == 0
    assert main(["export", str(csr), "--format", "dense", "--out", str(back)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_metadata(csr)["storage"] == "csr" and read_metadata(csr)["extra"] == {"epochs": 3}
    assert csr.stat().st_size < dense.stat().st_size
    fresh = _seeded(sequential_cnn, 7)
    fresh.load_state_dict(load_file(str(back)))  # plain PyTorch on the re-exported dense file
    assert _states_equal(fresh, net)
    assert _states_equal(load(csr, model=sequential_cnn()), net)

    assert main(["export", str(csr), "--compact", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--compact needs an MLP model file" in err and "Sequential" in err


# --- the models people train today: the penalised set decides what is stored as CSR ----------

import subprocess  # noqa: E402
import sys  # noqa: E402

from l1sparse.models import resnet_small, vit_small  # noqa: E402
from l1sparse.tensors import select_tensors  # noqa: E402


class _LSTMNet(nn.Module):
    """An LSTM language-model-like classifier: embedding, LSTM, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 20)

    def forward(self, x):
        return self.fc(self.lstm(self.embed(x))[0])


def _zero_set(net: nn.Module, zero_fraction: float, seed: int = 0) -> nn.Module:
    """Zero a random share of every tensor of the default penalised set, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in select_tensors(net, warn=False):
            w = t.param.view(-1)
            w[torch.randperm(w.numel(), generator=g)[:round(zero_fraction * w.numel())]] = 0
    return net


def _zoo():
    return {
        "resnet": _zero_set(resnet_small(width=4, blocks=(1, 1), seed=0), 0.8).eval(),
        "vit": _zero_set(vit_small(dim=16, depth=2, heads=2, mlp_dim=32, seed=0), 0.8).eval(),
    }


@pytest.mark.filterwarnings("ignore:l1sparse leaves these trainable tensors")
@pytest.mark.parametrize("storage", ["dense", "csr"])
def test_zoo_models_round_trip_in_a_fresh_process(tmp_path, storage):
    """save_model here; load(path) with no model= in a new interpreter rebuilds the ResNet (with
    BatchNorm statistics) and the ViT, and predicts exactly what the saved model predicted."""
    x = torch.randn(8, 784, generator=torch.Generator().manual_seed(0))
    for name, net in _zoo().items():
        with torch.no_grad():
            net.train()(torch.randn(16, 784))  # BatchNorm statistics that are not the defaults
            net.eval()
            expected = net(x)
        path = tmp_path / f"{name}.safetensors"
        save_model(net, path, format=storage)
        torch.save(x, tmp_path / "x.pt")
        code = ("import sys, torch; from l1sparse import load; m = load(sys.argv[1]); "
                "torch.set_grad_enabled(False); "  # as above: the encoder's inference path
                "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])")
        out = tmp_path / f"{name}.out.pt"
        proc = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"),
                               str(out)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert torch.equal(torch.load(out), expected)
        meta = read_metadata(path)
        assert meta["architecture"] == net.config
        assert [layer["name"] for layer in meta["layers"]] == [
            t.name for t in select_tensors(net, warn=False)]


@pytest.mark.filterwarnings("ignore:l1sparse leaves these trainable tensors")
def test_csr_stores_every_tensor_of_the_set_attention_and_lstm_included(tmp_path):
    vit = _zoo()["vit"]
    path = tmp_path / "vit.safetensors"
    save_model(vit, path, format="csr")
    shapes = read_metadata(path)["shapes"]
    assert shapes["encoder.layers.0.self_attn.in_proj_weight"] == [48, 16]
    assert shapes["patch_embed.weight"] == [16, 1, 4, 4]
    assert "pos_embedding" not in shapes and "encoder.layers.0.norm1.weight" not in shapes

    torch.manual_seed(0)
    lm = _zero_set(_LSTMNet(), 0.9).eval()
    path = tmp_path / "lm.safetensors"
    save_model(lm, path, format="csr")
    meta = read_metadata(path)
    assert set(meta["shapes"]) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc.weight"}
    assert meta["selection"] == {"include": None, "exclude": None}
    tokens = torch.randint(0, 20, (3, 5), generator=torch.Generator().manual_seed(1))
    fresh = load(path, model=_LSTMNet())
    with torch.no_grad():
        assert torch.equal(fresh(tokens), lm(tokens))


def test_the_set_given_to_save_model_is_stored_and_read_back_without_keywords(tmp_path):
    from l1sparse.export import convert, layer_sparsity

    torch.manual_seed(0)
    lm = _zero_set(_LSTMNet(), 0.5)
    path = tmp_path / "lm.safetensors"
    save_model(lm, path, format="csr", include=["embed.*", "lstm.*"], exclude=nn.Linear)
    meta = read_metadata(path)
    assert meta["selection"] == {"include": ["embed.*", "lstm.*"], "exclude": ["Linear"]}
    assert [layer["name"] for layer in meta["layers"]] == [
        "embed", "lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    assert [r.name for r in layer_sparsity(path).layers] == [
        "embed", "lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    again = tmp_path / "again.safetensors"
    convert(path, again, format="dense")  # the set travels with the file
    assert read_metadata(again)["layers"] == meta["layers"]
    assert read_metadata(again)["selection"] == meta["selection"]
    with pytest.raises(ValueError, match=r"'include' pattern 'nothing_\*' matches no tensor"):
        save_model(lm, tmp_path / "x.safetensors", include="nothing_*")


def test_a_file_written_before_the_selection_was_stored_reads_as_the_default(tmp_path, lenet):
    path = tmp_path / "old.safetensors"
    save_model(lenet, path, format="csr")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del header["selection"]
    save_file(tensors, str(path), metadata=header)
    meta = read_metadata(path)
    assert meta["selection"] == {"include": None, "exclude": None}
    assert _states_equal(load(path), lenet)


@pytest.mark.filterwarnings("ignore:l1sparse leaves these trainable tensors")
def test_a_compacted_vit_is_saved_as_weights_and_loads_into_a_compacted_copy(tmp_path):
    pytest.importorskip("torch_pruning")
    from l1sparse.compact import compact_model

    vit = vit_small(dim=16, depth=1, heads=4, mlp_dim=32, seed=0).eval()
    with torch.no_grad():
        vit.encoder.layers[0].self_attn.out_proj.weight[:, :4] = 0  # head 0 silent
    small = compact_model(vit).model
    path = tmp_path / "small.safetensors"
    save_model(small, path, format="csr")
    meta = read_metadata(path)
    assert meta["architecture"] == {}  # its config describes the model before compaction
    assert meta["shapes"]["encoder.layers.0.self_attn.in_proj_weight"] == [36, 16]
    fresh = load(path, model=compact_model(vit).model)
    x = torch.randn(4, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(x), small(x))
