"""Faster inference from exact zeros: linear layers that multiply by a CSR weight.

An ℓ1-trained network has most of its weights exactly zero, but ``nn.Linear`` multiplies by all
of them. :class:`SparseLinear` holds the weight as a ``torch.sparse_csr`` tensor and computes

.. math::

    y = x W^\\top + b

touching only the nonzeros. Whether that is faster depends on the layer's shape, its zero
fraction, the batch size, the thread count and the CPU, so :func:`to_sparse` measures each
candidate layer in place and swaps it only when the sparse product wins.

The sparse layers are for inference: their weight and bias are buffers, not parameters, so they
are not trained; gradients with respect to their weights are not supported. Use them under
``torch.no_grad()`` or ``torch.inference_mode()``.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SparseLinear", "to_sparse"]

logger = logging.getLogger(__name__)


def _to_csr(weight: Tensor) -> Tensor:
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta state": known, and not actionable by the user.
        warnings.simplefilter("ignore", UserWarning)
        return weight.detach().to_sparse_csr()


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` stored as a sparse CSR tensor (inference only).

    For a batch of two or more samples the product is ``torch.addmm(b[:, None], W_csr, x.T).T``:
    CSR times a dense matrix, then transposed (a view, no copy). Of the formulations tried on
    the layers of LeNet-300-100 (CSR or CSC, sparse times dense or dense times sparse, with the
    bias fused or added), it was the fastest; the comparison, as measured, is in
    ``benchmarks/SPARSE_KERNELS.md``.

    The transposed output means that a following :class:`SparseLinear` gets its right operand
    ``x.T`` in row-major order, which the CSR kernel reads faster than the column-major ``x.T``
    of an ordinary batch; copying ``x.T`` to make it row-major costs more than it saves. Call
    ``.contiguous()`` on the result if a contiguous tensor is needed.

    A single sample goes through ``torch.addmv(b, W_csr, x[0])``, whose fixed cost is lower than
    that of ``addmm``. On small layers every sparse kernel can stay slower than dense at batch 1,
    which :func:`to_sparse` detects by timing each layer in place.

    Parameters
    ----------
    weight : Tensor
        The ``(out_features, in_features)`` weight, dense (converted) or sparse CSR.
    bias : Tensor, optional
        The ``(out_features,)`` bias, kept dense.

    Notes
    -----
    The weight and bias are buffers, not parameters: the layer is not trainable, and autograd
    through it is not supported. The input must have the weight's dtype and device.

    Examples
    --------
    >>> lin = nn.Linear(6, 4)
    >>> with torch.no_grad():
    ...     lin.weight[:, :5] = 0.0
    >>> sp = SparseLinear.from_linear(lin)
    >>> sp
    SparseLinear(in_features=6, out_features=4, bias=True, nnz=4, zero_fraction=0.8333)
    >>> x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(sp(x), lin(x))
    True
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(
                f"The 'weight' parameter must be a 2-D matrix. Got shape {tuple(weight.shape)}."
            )
        out_features, in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ValueError(
                f"The 'bias' parameter must have shape ({out_features},) to match the weight. "
                f"Got {tuple(bias.shape)}."
            )
        csr = weight.detach() if weight.layout == torch.sparse_csr else _to_csr(weight)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.register_buffer("weight", csr)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        """The sparse counterpart of ``linear`` (its weight and bias are copied)."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(
                f"The 'linear' parameter must be an nn.Linear. Got {type(linear).__name__}."
            )
        return cls(linear.weight, linear.bias)

    def to_linear(self) -> nn.Linear:
        """A dense ``nn.Linear`` with the same weight and bias."""
        weight = self.weight.to_dense()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    @property
    def nnz(self) -> int:
        """Number of stored (nonzero) weights."""
        return int(self.weight.values().numel())

    @property
    def zero_fraction(self) -> float:
        """``1 − nnz / (out_features · in_features)``."""
        return 1.0 - self.nnz / (self.out_features * self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear expects inputs with {self.in_features} features in the last "
                f"dimension. Got shape {tuple(x.shape)}."
            )
        flat = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if flat.shape[0] == 1:
            # One sample: the matrix-vector kernel has less fixed cost than addmm (see above).
            vec = flat[0]
            out = (torch.mv(self.weight, vec) if self.bias is None
                   else torch.addmv(self.bias, self.weight, vec)).unsqueeze(0)
        elif self.bias is None:
            out = torch.mm(self.weight, flat.t()).t()
        else:
            out = torch.addmm(self.bias.unsqueeze(1), self.weight, flat.t()).t()
        if x.dim() != 2:
            out = out.reshape(*x.shape[:-1], self.out_features)
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # copy_ cannot write into a CSR tensor (its nnz is fixed), so a loaded weight replaces
        # the buffer: dense (e.g. from nn.Linear's state_dict or a model file) or CSR.
        for what in ("weight", "bias"):
            current = getattr(self, what)
            key = prefix + what
            if current is None:
                continue
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor) or tuple(value.shape) != tuple(current.shape):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {shape} "
                                  f"from checkpoint, the shape in current model is "
                                  f"{tuple(current.shape)}.")
                continue
            value = value.detach().to(dtype=current.dtype, device=current.device)
            if what == "weight":
                value = value if value.layout == torch.sparse_csr else _to_csr(value)
            else:
                value = value.clone()
            setattr(self, what, value)  # a registered buffer: the assignment replaces it
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key[len(prefix):].split(".", 1)[0] not in (
                        "weight", "bias"):
                    unexpected_keys.append(key)
            if self.bias is None and prefix + "bias" in state_dict:
                unexpected_keys.append(prefix + "bias")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz}, "
                f"zero_fraction={self.zero_fraction:.4f}")

    def __deepcopy__(self, memo: dict) -> SparseLinear:
        # The default deepcopy reaches for the storage of the CSR tensor, which torch refuses.
        new = type(self)(self.weight.clone(),
                         None if self.bias is None else self.bias.detach().clone())
        new.train(self.training)
        memo[id(self)] = new
        return new


class _Captured(Exception):
    """Raised by a pre-hook to stop a forward pass once a layer's input is captured."""


def _layer_input(model: nn.Module, layer: nn.Module, example: Tensor) -> Tensor | None:
    """The tensor ``layer`` receives when ``model`` runs on ``example`` (None if it cannot)."""
    box: dict[str, Tensor] = {}

    def hook(_module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor):
            box["x"] = args[0]
        raise _Captured

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(example)
    except _Captured:
        pass
    except Exception as exc:  # an example the model cannot take: fall back to a synthetic input
        logger.debug("Could not capture the input of a layer in context: %s", exc)
    finally:
        handle.remove()
    return box.get("x")


def _median_us(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median wall time of each function in µs; runs are interleaved so drift hits all alike."""
    for fn in fns:  # warm-up: first calls allocate and load kernels
        for _ in range(3):
            fn()
    # Batch calls into one timed run so that a run lasts at least ~100 µs (timer noise).
    start = time.perf_counter()
    for fn in fns:
        fn()
    inner = max(1, min(100, math.ceil(100e-6 * len(fns) / max(time.perf_counter() - start,
                                                               1e-9))))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t0) / inner * 1e6)
    return [statistics.median(s) for s in samples]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"The '{what}' parameter must be a positive integer. Got {value!r}.")
    return value


def to_sparse(
    model: nn.Module,
    *,
    batch_size: int = 1,
    min_zero_fraction: float = 0.5,
    repeats: int = 20,
    force: bool | None = None,
    example_input: Tensor | None = None,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``model`` whose sufficiently sparse ``nn.Linear`` layers multiply in CSR form.

    Each ``nn.Linear`` whose weight has a zero fraction of at least ``min_zero_fraction`` is a
    candidate. Candidates are visited in model order; for each, the input it receives in the
    copy (with the earlier decisions applied, so the memory layout is the real one) is captured
    at ``batch_size``, the dense layer and a :class:`SparseLinear` are timed alternately
    (median of ``repeats`` runs after warm-up), and the layer is replaced only if the sparse one
    is faster. The timings hold for the current ``torch.get_num_threads()``.

    ``model`` itself is never modified. The copy is put in eval mode and carries the decisions in
    the attribute ``sparse_layers``: ``{layer name: {"zero_fraction", "nnz", "dense_us",
    "sparse_us", "chosen", "reason"}}`` for every ``nn.Linear``, where ``chosen`` is ``"sparse"``
    or ``"dense"`` and the times are None when no timing was made.

    Parameters
    ----------
    model : nn.Module
        The network (e.g. an :class:`~l1sparse.MLP`, or a model returned by
        :func:`l1sparse.export.load`).
    batch_size : int, default 1
        Batch size the timings are made at; the best choice differs between 1 and 256.
    min_zero_fraction : float, default 0.5
        Layers with a smaller zero fraction stay dense without being timed. In [0, 1].
    repeats : int, default 20
        Timed runs per layer and variant.
    force : bool or None, default None
        None: decide by timing. True: replace every candidate without timing (deterministic,
        e.g. for tests; ``min_zero_fraction=0`` makes every ``nn.Linear`` a candidate). False:
        replace none.
    example_input : Tensor, optional
        A batch the model accepts, used to capture each layer's real input; its leading
        dimension overrides ``batch_size``. By default a random ``(batch_size, in_features)``
        batch is drawn when ``model.config`` has ``in_features``; otherwise (or if the model
        rejects the example) each layer is timed on a random ``(batch_size, in_features)`` input
        of its own.
    seed : int, default 0
        Seed of the random timing inputs (their values do not change the outputs of the copy).

    Returns
    -------
    nn.Module
        The converted copy, in eval mode, with ``sparse_layers``. Its outputs equal the dense
        model's up to floating-point summation order (about 1e-7 relative in float32).

    Raises
    ------
    ValueError
        If ``model`` is not an ``nn.Module`` or an argument is out of range.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> net = mlp(20, [16], 3, seed=0)
    >>> with torch.no_grad():
    ...     net.fc1.weight[:, 2:] = 0.0
    >>> fast = to_sparse(net, force=True)
    >>> fast.sparse_layers["fc1"]["chosen"], fast.sparse_layers["fc2"]["chosen"]
    ('sparse', 'dense')
    >>> x = torch.randn(5, 20, generator=torch.Generator().manual_seed(1))
    >>> torch.allclose(fast(x), net(x), atol=1e-6)
    True
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"The 'model' parameter must be an nn.Module. Got {type(model).__name__}.")
    batch_size = _check_int(batch_size, "batch_size")
    repeats = _check_int(repeats, "repeats")
    try:
        min_zero_fraction = float(min_zero_fraction)
    except (TypeError, ValueError):
        raise ValueError(
            f"The 'min_zero_fraction' parameter must be a number in [0, 1]. "
            f"Got {min_zero_fraction!r}."
        ) from None
    if not 0.0 <= min_zero_fraction <= 1.0:
        raise ValueError(
            f"The 'min_zero_fraction' parameter must be in [0, 1]. Got {min_zero_fraction!r}."
        )
    if force not in (None, True, False):
        raise ValueError(f"The 'force' parameter must be None, True or False. Got {force!r}.")
    if example_input is not None and not isinstance(example_input, Tensor):
        raise ValueError(
            f"The 'example_input' parameter must be a Tensor or None. "
            f"Got {type(example_input).__name__}."
        )

    generator = torch.Generator().manual_seed(int(seed))
    converted = copy.deepcopy(model).eval()
    records: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        linears = [(n, m) for n, m in converted.named_modules() if isinstance(m, nn.Linear)]
        example = example_input
        if example is None and force is None and linears:
            config = getattr(converted, "config", None)
            in_features = config.get("in_features") if isinstance(config, dict) else None
            if isinstance(in_features, int):
                weight = linears[0][1].weight
                example = torch.randn(batch_size, in_features, generator=generator,
                                      dtype=weight.dtype).to(weight.device)
        for name, layer in linears:
            nnz = int(torch.count_nonzero(layer.weight))
            zero_fraction = 1.0 - nnz / layer.weight.numel()
            record: dict[str, Any] = {"zero_fraction": zero_fraction, "nnz": nnz,
                                      "dense_us": None, "sparse_us": None,
                                      "chosen": "dense", "reason": ""}
            records[name] = record
            if zero_fraction < min_zero_fraction:
                record["reason"] = f"zero fraction below {min_zero_fraction}"
            elif force is not None:
                record["reason"] = f"force={force}"
                if force:
                    record["chosen"] = "sparse"
                    _set_submodule(converted, name, SparseLinear.from_linear(layer))
            else:
                sparse = SparseLinear.from_linear(layer)
                x = None if example is None else _layer_input(converted, layer, example)
                if x is None:
                    x = torch.randn(batch_size, layer.in_features, generator=generator,
                                    dtype=layer.weight.dtype).to(layer.weight.device)
                dense_us, sparse_us = _median_us([lambda: layer(x), lambda: sparse(x)], repeats)
                record.update(dense_us=dense_us, sparse_us=sparse_us)
                if sparse_us < dense_us:
                    record.update(chosen="sparse", reason="faster")
                    _set_submodule(converted, name, sparse)
                else:
                    record["reason"] = "not faster"
            logger.info(
                "to_sparse: %s zero fraction %.4f, dense %s µs, sparse %s µs -> %s (%s)",
                name, zero_fraction,
                "-" if record["dense_us"] is None else f"{record['dense_us']:.1f}",
                "-" if record["sparse_us"] is None else f"{record['sparse_us']:.1f}",
                record["chosen"], record["reason"],
            )
    converted.sparse_layers = records
    return converted
