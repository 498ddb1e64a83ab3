"""Model files: a network's weights in one safetensors file, dense or CSR, for any ``nn.Module``.

A model file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file. Its tensors are
the module's ``state_dict``; its string-to-string metadata describes the network:

=================  ======================================================================
key                value
=================  ======================================================================
``format``         ``"l1sparse"`` (marks the file as ours)
``version``        ``"1"``
``storage``        ``"dense"`` or ``"csr"``
``architecture``   ``json.dumps(model.config)`` for a model of the zoo (:class:`~l1sparse.MLP`,
                   :func:`~l1sparse.models.resnet_small`, :func:`~l1sparse.models.vit_small`:
                   the argument of :func:`~l1sparse.build_model`, so :func:`load` can rebuild
                   it); ``{}`` for any other module
``module``         JSON ``{"class": type(model).__name__}``: a description for people and
                   error messages, never imported
``layers``         JSON list, one entry per penalised tensor in ``state_dict`` order (the set
                   of :func:`~l1sparse.tensors.select_tensors` with the ``include``/``exclude``
                   given to :func:`save_model`, plus the CSR weight of each
                   :class:`~l1sparse.SparseLinear`): ``{"name", "type": the holding module's
                   class, "weight": state_dict key, "shape"}``
``selection``      JSON ``{"include": ..., "exclude": ...}``: the patterns that chose the set
                   (module types by class name), ``null`` for the default
``shapes``         JSON ``{tensor name: shape}`` of the weights stored as CSR (``{}`` if dense)
``extra``          JSON of the caller's ``metadata`` (λ, nnz, accuracy, …)
=================  ======================================================================

No entry names code to import: a file is data only. A zoo model (MLP, small ResNet, small ViT)
is rebuilt by l1sparse
from its ``architecture``; any other module is constructed by the user and filled with
``load(path, model=MyNet())``. The per-layer counts (:func:`layer_sparsity`) and the conversion
between storages (:func:`convert`) need the file alone.

With ``storage="dense"`` the tensors are the ``state_dict`` as is, zeros included, so
``module.load_state_dict(safetensors.torch.load_file(path))`` loads it without l1sparse. With
``storage="csr"`` every penalised tensor ``W`` (a layer's weight, an attention's
``in_proj_weight``, an LSTM's ``weight_ih_l0``, ...) is reshaped to ``(shape[0], -1)`` and
stored as the three arrays of its compressed sparse row form, ``<key>.values``,
``<key>.col_indices`` and ``<key>.crow_indices`` (int32 whenever the counts
fit, int64 otherwise); biases and every other tensor stay dense. Only the nonzeros are written,
so a 95 % sparse network takes about ``0.05 · (4 + 4)`` bytes per float32 weight instead of 4.
Loading either storage gives back the same weights (``torch.equal``), exact zeros included; a
``-0.0`` comes back as ``0.0``.

Files written before ``module`` and ``layers`` existed (built-in MLPs only) read as before: their
layers are derived from the architecture. Files written before ``selection`` existed read as
chosen by the default set; their ``layers`` (``nn.Linear`` and ``nn.Conv1d/2d/3d`` weights) are
what the default set chooses for such models.

(About 800 lines: the writer, the readers, ``convert`` and ``layer_sparsity`` must agree on
one file format — its metadata keys, CSR layout and the checks on a file — so they live
together; inference on the loaded tensors is in :mod:`l1sparse.sparse_inference`.)
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ._atomic import atomic_write
from .models import build_model
from .sharded import full_state_dict, is_dtensor
from .sparse_inference import SparseLinear
from .sparsity import LayerSparsity, SparsityReport
from .tensors import select_tensors

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STORAGES",
    "save_model",
    "load",
    "read_metadata",
    "read_state_dict",
    "layer_sparsity",
    "convert",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "l1sparse"
FORMAT_VERSION = "1"
STORAGES = ("dense", "csr")

_CSR_PARTS = ("values", "col_indices", "crow_indices")
_INT32_MAX = torch.iinfo(torch.int32).max


# --------------------------------------------------------------------------- writing


_ZOO_KINDS = ("mlp", "resnet_small", "vit_small")


def _mlp_architecture(model: nn.Module) -> dict[str, Any] | None:
    """A zoo model's ``config`` (MLP, small ResNet, small ViT), checked to be rebuildable;
    None for any other module."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping) or config.get("kind") not in _ZOO_KINDS:
        return None
    config = dict(config)
    try:
        json.dumps(config)
        build_model(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"The 'model' parameter's config {config!r} cannot be rebuilt by build_model(): {exc}"
        ) from exc
    return config


def _fits(config: Mapping[str, Any], state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` has exactly the names and shapes of ``build_model(config)``."""
    with torch.random.fork_rng(devices=[]):  # its random initial weights are not used
        expected = build_model(dict(config)).state_dict()
    return expected.keys() == state.keys() and all(
        tuple(expected[k].shape) == tuple(state[k].shape) for k in expected)


def _weight_key(layer: str) -> str:
    return f"{layer}.weight" if layer else "weight"


def _layer_records(model: nn.Module, state: Mapping[str, Any], include=None,
                   exclude=None) -> list[dict[str, Any]]:
    """One record per penalised tensor in ``state`` (the set of
    :func:`~l1sparse.tensors.select_tensors`, and each SparseLinear's CSR weight), in
    ``state_dict`` order."""
    try:
        tensors = select_tensors(model, include, exclude, warn=False)
    except ValueError:
        if include is not None or exclude is not None:
            raise  # a pattern that matches nothing: the caller's mistake, said as it is
        tensors = []  # nothing penalisable (e.g. every Linear already a SparseLinear)
    records = []
    for t in tensors:
        key = next((a for a in t.aliases if isinstance(state.get(a), Tensor)), None)
        if key is not None:
            records.append({"name": t.name, "type": type(t.module).__name__, "weight": key,
                            "shape": list(state[key].shape)})
    for name, module in model.named_modules():  # the inference form of nn.Linear
        key = _weight_key(name)
        if isinstance(module, SparseLinear) and isinstance(state.get(key), Tensor):
            records.append({"name": name, "type": type(module).__name__, "weight": key,
                            "shape": list(state[key].shape)})
    order = {k: i for i, k in enumerate(state)}
    return sorted(records, key=lambda r: order[r["weight"]])


def _selection(include, exclude) -> dict[str, Any]:
    """The patterns that chose the set, as JSON (module types by class name)."""
    def plain(patterns):
        if patterns is None:
            return None
        items = [patterns] if isinstance(patterns, (str, type)) else list(patterns)
        return [p.__name__ if isinstance(p, type) else str(p) for p in items]

    return {"include": plain(include), "exclude": plain(exclude)}


def _index_dtype(bound: int) -> torch.dtype:
    return torch.int32 if bound <= _INT32_MAX else torch.int64


def _dense_cpu(tensor: Tensor) -> Tensor:
    """A detached, contiguous, strided CPU copy (safetensors refuses shared or sparse storage)."""
    tensor = tensor.detach()
    if tensor.layout != torch.strided:  # e.g. the CSR weight of a SparseLinear
        tensor = tensor.to_dense()
    return tensor.to("cpu", copy=True).contiguous()


def _csr_parts(weight: Tensor) -> dict[str, Tensor]:
    """The three CSR arrays of ``weight`` viewed as a ``(shape[0], -1)`` matrix."""
    matrix = weight.reshape(weight.shape[0], -1) if weight.dim() != 2 else weight
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta state": true, and not the user's concern here.
        warnings.simplefilter("ignore", UserWarning)
        csr = matrix.to_sparse_csr()
    nnz = csr.values().numel()
    # crow and col must share a dtype when the CSR tensor is rebuilt; choose it from both bounds.
    dtype = _index_dtype(max(nnz, matrix.shape[1]))
    return {
        "values": csr.values().contiguous(),
        "col_indices": csr.col_indices().to(dtype).contiguous(),
        "crow_indices": csr.crow_indices().to(dtype).contiguous(),
    }


def _check_format(format: str) -> None:  # noqa: A002
    if format not in STORAGES:
        raise ValueError(f"The 'format' parameter must be one of {list(STORAGES)}. Got {format!r}.")


def _extra_json(metadata: Mapping[str, Any] | None) -> str:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(
            f"The 'metadata' parameter must be a mapping or None. Got {type(metadata).__name__}."
        )
    try:
        return json.dumps(dict(metadata or {}), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The 'metadata' parameter must be JSON-serialisable: {exc}") from exc


def _write(
    path: str | os.PathLike,
    state: Mapping[str, Tensor],
    *,
    storage: str,
    architecture: Mapping[str, Any],
    module: Mapping[str, Any],
    layers: list[dict[str, Any]],
    extra: str,
    selection: Mapping[str, Any] | None = None,
) -> int:
    """Write the dense tensors of ``state``; the weights of ``layers`` as CSR if asked."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"The directory {directory!r} for the model file does not exist.")
    csr_keys = {layer["weight"] for layer in layers} if storage == "csr" else set()
    tensors: dict[str, Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, value in state.items():
        value = _dense_cpu(value)
        if key in csr_keys and value.dim() >= 1:
            shapes[key] = list(value.shape)
            for part, array in _csr_parts(value).items():
                tensors[f"{key}.{part}"] = array
        else:
            tensors[key] = value
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "storage": storage,
        "architecture": json.dumps(dict(architecture), sort_keys=True),
        "module": json.dumps(dict(module), sort_keys=True),
        "layers": json.dumps(layers),
        "selection": json.dumps(dict(selection or {"include": None, "exclude": None}),
                                sort_keys=True),
        "shapes": json.dumps(shapes, sort_keys=True),
        "extra": extra,
    }
    try:
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    except Exception as exc:  # safetensors: e.g. a dtype it cannot store
        if isinstance(exc, (OSError, ValueError)):
            raise
        raise ValueError(f"Cannot write the model file {path!r}: {exc}") from exc
    size = os.path.getsize(path)
    logger.info("Wrote %s (%s storage, %d bytes).", path, storage, size)
    return size


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str = "dense",  # noqa: A002 - the name the CLI and the file format use
    metadata: Mapping[str, Any] | None = None,
    include=None,
    exclude=None,
) -> int:
    """Write ``model``'s ``state_dict`` to a safetensors model file, dense or with CSR weights.

    Any ``nn.Module`` can be saved: every tensor of its ``state_dict`` is stored (parameters and
    persistent buffers, e.g. batch-norm statistics). The file describes the module but names no
    code to import; a zoo model (:class:`~l1sparse.MLP`, :func:`~l1sparse.models.resnet_small`,
    :func:`~l1sparse.models.vit_small`) is rebuilt by :func:`load` from its stored
    architecture, any other module is loaded with ``load(path, model=MyNet())``.

    The file is written to a temporary file in the same directory and moved into place with
    :func:`os.replace`, so ``path`` holds either its previous content or the complete new file,
    never a partial one.

    Parameters
    ----------
    model : nn.Module
        The network: a zoo model (its ``config`` is stored, and its ``state_dict``
        must match it), or any other module. A module returned by
        :func:`~l1sparse.sparse_inference.to_sparse` is accepted (its CSR weights are written
        like dense ones). A model sharded with FSDP2 (``fully_shard``, DTensor parameters) is
        gathered to rank 0 on the CPU (:func:`~l1sparse.sharded.full_state_dict`): every rank
        calls ``save_model``, rank 0 writes the file and the others return 0.
    path : str or path-like
        Destination file; its directory must exist. An existing file is replaced.
    format : {"dense", "csr"}, default "dense"
        ``"dense"`` stores the ``state_dict`` as is (loadable with
        ``safetensors.torch.load_file`` alone); ``"csr"`` stores every penalised tensor (and
        each ``SparseLinear``'s weight) in compressed sparse row form (see the module
        docstring).
    metadata : mapping, optional
        JSON-serialisable information kept in the file under ``extra`` and returned by
        :func:`read_metadata` (e.g. λ per layer, nnz, test accuracy).
    include, exclude : patterns, optional
        The penalised set, as given to :func:`~l1sparse.param_groups` for training
        (:func:`~l1sparse.tensors.select_tensors`); default: the default set. It is stored in
        the file (``layers``, ``selection``), so :func:`layer_sparsity`, :func:`convert` and the
        command line's ``inspect``/``export`` need no keywords again.

    Returns
    -------
    int
        The number of bytes written (the size of the file).

    Raises
    ------
    ValueError
        If ``format`` is unknown, ``metadata`` is not a JSON-serialisable mapping, an MLP's
        ``state_dict`` does not match its config, ``include``/``exclude`` match nothing,
        or the ``state_dict`` holds something a
        safetensors file cannot store (a non-tensor extra state, an uninitialised lazy
        parameter).
    FileNotFoundError
        If the directory of ``path`` does not exist.

    Examples
    --------
    >>> import os, tempfile
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    >>> f = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> save_model(net, f, format="csr", metadata={"lambda": 0.1}) == os.path.getsize(f)
    True
    >>> meta = read_metadata(f)
    >>> meta["extra"], meta["module"], [layer["name"] for layer in meta["layers"]]
    ({'lambda': 0.1}, {'class': 'Sequential'}, ['0', '3'])
    """
    _check_format(format)
    extra = _extra_json(metadata)
    if not isinstance(model, nn.Module):
        raise ValueError(f"The 'model' parameter must be an nn.Module. Got {type(model).__name__}.")
    config = _mlp_architecture(model)
    state = model.state_dict()
    if any(is_dtensor(v) for v in state.values()):  # sharded (FSDP2): rank 0 writes
        state = full_state_dict(model)
        if not state:
            return 0
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(
                f"The 'model' parameter's state_dict entry {key!r} is a {type(value).__name__}, "
                "not a tensor (extra state); a safetensors model file stores tensors only."
            )
        if isinstance(value, nn.parameter.UninitializedTensorMixin):
            raise ValueError(
                f"The 'model' parameter's tensor {key!r} is an uninitialised lazy parameter; "
                "run one forward pass before saving."
            )
    if config is not None and config.get("kind") != "mlp" and not _fits(config, state):
        # a zoo ResNet/ViT changed since it was built (compact_model removed channels or
        # heads): its config no longer describes it, so it is stored as weights only
        logger.info("The %s no longer matches its config (compacted?): saved without an "
                    "architecture; load it with load(path, model=...).", type(model).__name__)
        config = None
    if config is not None:
        expected = build_model(config).state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                "The 'model' parameter's state_dict does not match its config: "
                f"missing {missing}, unexpected {unexpected}."
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(
                    f"The 'model' parameter's tensor {key!r} has shape {tuple(value.shape)}; "
                    f"its config implies {tuple(expected[key].shape)}."
                )
    return _write(path, state, storage=format, architecture=config or {},
                  module={"class": type(model).__name__},
                  layers=_layer_records(model, state, include, exclude), extra=extra,
                  selection=_selection(include, exclude))


# --------------------------------------------------------------------------- reading


def _safe_open(path: str):
    try:
        return safe_open(path, framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError (an Exception)
        raise ValueError(
            f"The model file {path!r} is not a valid safetensors file (truncated or corrupt?): "
            f"{exc}"
        ) from exc


def _derived_layers(architecture: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The layer records of a file written before they were stored (a built-in MLP)."""
    try:
        model = build_model(dict(architecture))
    except (TypeError, ValueError, KeyError):
        return []
    return _layer_records(model, model.state_dict())


def _read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Check that ``path`` is an l1sparse model file and return its decoded metadata."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"The model file {path!r} does not exist.")
    if os.path.isdir(path):
        raise ValueError(f"The model file {path!r} is a directory, not a safetensors file.")
    with _safe_open(path) as handle:
        raw = handle.metadata() or {}
    if raw.get("format") != FORMAT_NAME:
        raise ValueError(
            f"The model file {path!r} is a safetensors file but not an l1sparse model file "
            f"(its metadata has no format={FORMAT_NAME!r} entry)."
        )
    if raw.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"The model file {path!r} has l1sparse format version {raw.get('version')!r}; "
            f"this library reads version {FORMAT_VERSION!r}."
        )
    storage = raw.get("storage")
    if storage not in STORAGES:
        raise ValueError(
            f"The model file {path!r} has an unknown storage {storage!r}; "
            f"expected one of {list(STORAGES)}."
        )
    decoded: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                               "storage": storage}
    for key, default, kind in (("architecture", "{}", dict), ("module", "{}", dict),
                               ("layers", None, list), ("shapes", "{}", dict),
                               ("selection", '{"exclude": null, "include": null}', dict),
                               ("extra", "{}", dict)):
        text = raw.get(key, default)
        if text is None:
            continue
        try:
            decoded[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"The model file {path!r} has unreadable {key!r} metadata: {exc}"
            ) from exc
        if not isinstance(decoded[key], kind):
            raise ValueError(f"The model file {path!r} has {key!r} metadata that is not a "
                             f"{kind.__name__}.")
    if "layers" not in decoded:
        decoded["layers"] = _derived_layers(decoded["architecture"])
    for layer in decoded["layers"]:
        if not (isinstance(layer, dict) and isinstance(layer.get("name"), str)
                and isinstance(layer.get("weight"), str) and isinstance(layer.get("shape"), list)):
            raise ValueError(f"The model file {path!r} has a malformed 'layers' entry {layer!r}.")
    return decoded


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a model file, without reading its tensors.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`.

    Returns
    -------
    dict
        ``{"format", "version", "storage", "architecture": dict, "module": dict,
        "layers": list, "selection": dict, "shapes": dict, "extra": dict}``, where
        ``architecture`` is a zoo model's config (``{}`` for any other module), ``module``
        describes the saved class (``{"class": name}``), ``layers`` lists the penalised tensors,
        ``selection`` the patterns that chose them (``None`` for the default set; files
        written before it existed read as the default) and ``shapes`` maps each CSR-stored
        weight to its shape.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a readable safetensors file or not an l1sparse model file.
    """
    return _read_header(path)


def _class_name(meta: Mapping[str, Any]) -> str:
    name = meta.get("module", {}).get("class")
    return name if isinstance(name, str) and name.isidentifier() else "YourNet"


def _csr_tensor(name: str, key: str, shape: Any, values: Tensor, col: Tensor,
                crow: Tensor) -> Tensor:
    try:
        shape = tuple(int(s) for s in shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_csr_tensor(
                crow.to(torch.int64), col.to(torch.int64), values,
                size=(shape[0], int(torch.Size(shape[1:]).numel())),
                check_invariants=True,
            )
            return matrix.to_dense().reshape(shape)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(
            f"The model file {name!r} has inconsistent CSR arrays for {key!r}: {exc}"
        ) from exc


def _read_all(name: str, meta: Mapping[str, Any]) -> dict[str, Tensor]:
    """Every stored tensor under its ``state_dict`` name, CSR weights expanded to dense."""
    shapes = meta["shapes"] if meta["storage"] == "csr" else {}
    with _safe_open(name) as handle:
        available = list(handle.keys())
        present = set(available)
        parts = {f"{key}.{part}" for key in shapes for part in _CSR_PARTS}
        absent = sorted(p for p in parts if p not in present)
        if absent:
            raise ValueError(f"The model file {name!r} lacks the tensors {absent}.")
        state: dict[str, Tensor] = {}
        for key in available:
            if key not in parts:
                state[key] = handle.get_tensor(key)
        for key, shape in shapes.items():
            values, col, crow = (handle.get_tensor(f"{key}.{part}") for part in _CSR_PARTS)
            state[key] = _csr_tensor(name, key, shape, values, col, crow)
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``state_dict`` stored in a model file, dense or CSR, without any module.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`.

    Returns
    -------
    dict
        ``{name: tensor}``, CSR weights expanded to dense tensors with exact zeros, on the CPU;
        ready for ``module.load_state_dict``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a readable l1sparse model file or its CSR arrays are inconsistent.
    """
    name = os.fspath(path)
    return _read_all(name, _read_header(name))


def _mismatches(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> list[str]:
    """Readable differences between the file's tensors and those a module expects."""
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} (file {tuple(state[k].shape)}, module {tuple(expected[k].shape)})"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing:
        problems.append(f"missing from the file: {', '.join(missing)}")
    if unexpected:
        problems.append(f"in the file but not in the module: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shapes differ: {', '.join(shapes)}")
    return problems


def _fill(model: nn.Module, name: str, meta: Mapping[str, Any], state: dict[str, Tensor]) -> None:
    """Load ``state`` into the user's ``model``, after one check of names and shapes."""
    expected = model.state_dict()
    problems = _mismatches(state, expected)
    if problems:
        raise ValueError(
            f"The model file {name!r} (saved from a {_class_name(meta)}) does not fit the given "
            f"{type(model).__name__}: " + "; ".join(problems) + "."
        )
    cast = [k for k, v in state.items() if isinstance(expected[k], Tensor)
            and v.is_floating_point() and v.dtype != expected[k].dtype]
    if cast:
        logger.warning("Loading %s: %d tensors cast to the module's dtype (e.g. %s: %s -> %s).",
                       name, len(cast), cast[0], state[cast[0]].dtype, expected[cast[0]].dtype)
    model.load_state_dict(state, strict=True)


def _rebuild(name: str, meta: Mapping[str, Any], state: dict[str, Tensor]) -> nn.Module:
    """The zoo model of the file's architecture, with the stored weights."""
    if not meta["architecture"]:
        cls = _class_name(meta)
        raise ValueError(
            f"The model file {name!r} holds the weights of a {cls}, which l1sparse cannot "
            f"rebuild (the file names no code to import): construct it and pass it, as in "
            f"load({name!r}, model={cls}())."
        )
    try:
        model = build_model(meta["architecture"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"The model file {name!r} has an architecture that build_model() cannot rebuild: {exc}"
        ) from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(f"The model file {name!r} lacks the tensors {missing}.")
    unused = sorted(set(state) - set(expected))
    if unused:
        logger.warning("The model file %s has tensors the architecture does not use: %s.",
                       name, unused)
        state = {k: v for k, v in state.items() if k in expected}
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"The model file {name!r} stores {key!r} with shape {tuple(value.shape)}; "
                f"the architecture needs {tuple(expected[key].shape)}."
            )
    floating = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(floating) == 1:
        # Keep the stored precision (e.g. a float64 model); load_state_dict would cast it away.
        model.to(floating.pop())
    model.load_state_dict(state, strict=True)
    return model


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Load a model file, dense or CSR: into a module you pass, or rebuilding a zoo model.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`, dense or CSR storage.
    model : nn.Module, optional
        A module constructed as the saved one was (e.g. ``MyNet()``): it is filled in place with
        the stored tensors, after one check that names and shapes match its ``state_dict``
        exactly (the error lists every mismatch). Values are copied into the module's own
        tensors, as ``load_state_dict`` does, so they take its dtype and device. Without it,
        the file must hold a zoo model (an :class:`~l1sparse.MLP`, a small ResNet or ViT),
        which is rebuilt from the stored
        architecture in the stored precision.
    device : str or torch.device, optional
        Where the returned module lives. Default: the CPU for a rebuilt MLP; wherever ``model``
        already is for a given module.

    Returns
    -------
    nn.Module
        ``model`` itself when given, else the rebuilt MLP; with the stored weights (CSR weights
        expanded to dense tensors with exact zeros), in eval mode.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a safetensors file, is truncated, is not an l1sparse model file, does
        not match ``model`` (missing, unexpected or differently shaped tensors), lacks tensors
        the architecture needs, or holds a module other than the MLP and ``model`` is not given
        (the message says to pass ``model=YourNet()``).

    Examples
    --------
    >>> import os, tempfile
    >>> from torch import nn
    >>> def make():
    ...     return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> net = make()
    >>> f = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> _ = save_model(net, f, format="csr")
    >>> fresh = load(f, model=make())
    >>> all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
    ...                                        fresh.state_dict().values()))
    True
    >>> load(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The model file '...' holds the weights of a Sequential, ... model=Sequential()).
    """
    name = os.fspath(path)
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(
            f"The 'model' parameter must be an nn.Module or None. Got {type(model).__name__}."
        )
    meta = _read_header(name)
    if model is None and not meta["architecture"]:
        _rebuild(name, meta, {})  # raises: say to pass model= before reading any tensor
    state = _read_all(name, meta)
    if model is None:
        model = _rebuild(name, meta, state)
        device = "cpu" if device is None else device
    else:
        _fill(model, name, meta, state)
    logger.info("Loaded %s (%s storage).", name, meta["storage"])
    if device is not None:
        model = model.to(device)
    return model.eval()


# --------------------------------------------------------------------------- the file alone


def layer_sparsity(path: str | os.PathLike) -> SparsityReport:
    """nnz and total of each penalised layer's weight, read from the file alone (no class).

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`, dense or CSR storage, of any module.

    Returns
    -------
    SparsityReport
        One :class:`~l1sparse.sparsity.LayerSparsity` per penalised layer, in model order;
        for an MLP file it equals ``sparsity(load(path))``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a readable l1sparse model file or lacks a layer's weight.
    """
    name = os.fspath(path)
    meta = _read_header(name)
    shapes = meta["shapes"] if meta["storage"] == "csr" else {}
    layers = []
    with _safe_open(name) as handle:
        present = set(handle.keys())
        for layer in meta["layers"]:
            key = layer["weight"]
            stored = f"{key}.values" if key in shapes else key
            if stored not in present:
                raise ValueError(f"The model file {name!r} lacks the tensor {stored!r} of the "
                                 f"layer {layer['name']!r}.")
            shape = tuple(int(s) for s in (shapes.get(key) or layer["shape"]))
            nnz = int(torch.count_nonzero(handle.get_tensor(stored)))
            layers.append(LayerSparsity(layer["name"], shape, nnz,
                                        int(torch.Size(shape).numel())))
    return SparsityReport(tuple(layers))


def convert(
    source: str | os.PathLike,
    path: str | os.PathLike,
    *,
    format: str,  # noqa: A002 - as in save_model
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Re-write a model file in another storage (dense ↔ CSR), without the module's class.

    The tensors, architecture, module description and layers are kept; the result equals
    ``save_model(load(source, model=...), path, format=format)`` for the same module.

    Parameters
    ----------
    source : str or path-like
        A file written by :func:`save_model`.
    path : str or path-like
        Destination file; its directory must exist. May be ``source`` itself.
    format : {"dense", "csr"}
        Storage of the new file.
    metadata : mapping, optional
        Replaces the ``extra`` metadata; by default the source's is kept.

    Returns
    -------
    int
        The number of bytes written.

    Raises
    ------
    FileNotFoundError
        If ``source`` or the directory of ``path`` does not exist.
    ValueError
        If ``format`` or ``metadata`` is invalid, or ``source`` is not a readable model file
        (for an MLP file: one whose tensors do not match its architecture).
    """
    _check_format(format)
    name = os.fspath(source)
    meta = _read_header(name)
    extra = (json.dumps(meta["extra"], sort_keys=True) if metadata is None
             else _extra_json(metadata))
    state = _read_all(name, meta)
    if meta["architecture"]:
        state = _rebuild(name, meta, state).state_dict()  # checked against the architecture
    return _write(path, state, storage=format, architecture=meta["architecture"],
                  module=meta.get("module", {}), layers=meta["layers"], extra=extra,
                  selection=meta.get("selection"))
