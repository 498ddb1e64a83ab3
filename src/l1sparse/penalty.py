"""Which parameters the ℓ1 term penalises, and the λ conventions.

The objective of the paper (summed-loss scale, DESIGN §1) is

.. math::

    \\min_\\Theta \\; L(\\Theta) + \\sum_k \\lambda_k \\lVert W_k \\rVert_1,
    \\qquad L(\\Theta) = \\sum_{i=1}^N \\ell(N(\\Theta; x_i), y_i).

Only weight matrices of ``nn.Linear`` and kernels of ``nn.Conv1d/2d/3d`` are penalised;
biases never are. A λ that this library reports or accepts is on the summed scale unless its
name says otherwise: ``lambda_per_sample = λ / N`` is the coefficient that goes with the mean
loss, which is what the optimizers see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "PENALISED_TYPES",
    "penalised_layers",
    "layer_names",
    "resolve_lambdas",
    "lambda_per_sample",
    "lambda_summed",
    "map_lambda",
    "l1_norms",
    "penalty_value",
    "param_groups",
    "set_group_l1",
    "UNPENALISED_GROUP",
]

PENALISED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def penalised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for every layer whose weight is penalised, in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PENALISED_TYPES)]


def layer_names(model: nn.Module) -> list[str]:
    """Names of the penalised layers, in the order used by per-layer lists."""
    return [name for name, _ in penalised_layers(model)]


def _check_lambda(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"The '{what}' parameter must be a number. Got {value!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"The '{what}' parameter must be a finite number >= 0. Got {value!r}.")
    return value


def resolve_lambdas(
    model: nn.Module,
    lam: float | None = None,
    layer_lam: Sequence[float] | Mapping[str | int, float] | None = None,
) -> dict[str, float]:
    """Map every penalised layer name to its λ_k (summed-loss scale).

    Parameters
    ----------
    model : nn.Module
        The network.
    lam : float, optional
        One λ for all layers (the single-parameter model). Default 0.
    layer_lam : sequence of float, or mapping from layer name or index to float, optional
        Per-layer λ_k (the multi-parameter model). A sequence must have one entry per penalised
        layer; a mapping overrides ``lam`` for the layers it names.

    Returns
    -------
    dict
        ``{layer_name: λ_k}`` in model order.

    Raises
    ------
    ValueError
        If a λ is negative or not finite, a sequence has the wrong length, or a mapping names an
        unknown layer.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> net = mlp(4, [8], 1)
    >>> resolve_lambdas(net, layer_lam={"fc2": 3.0}, lam=1.0)
    {'fc1': 1.0, 'fc2': 3.0}
    """
    names = layer_names(model)
    if not names:
        raise ValueError("The model has no penalisable layer (nn.Linear or nn.Conv*).")
    base = 0.0 if lam is None else _check_lambda(lam, "lam")
    lambdas = {name: base for name in names}
    if layer_lam is None:
        return lambdas
    if isinstance(layer_lam, Mapping):
        for key, value in layer_lam.items():
            if isinstance(key, int) and not isinstance(key, bool):
                if not -len(names) <= key < len(names):
                    raise ValueError(
                        f"The 'layer_lam' parameter names layer index {key}, but the model has "
                        f"{len(names)} penalised layers (0..{len(names) - 1})."
                    )
                key = names[key]
            elif key not in lambdas:
                raise ValueError(
                    f"The 'layer_lam' parameter names an unknown layer {key!r}; "
                    f"the penalised layers are {names}."
                )
            lambdas[key] = _check_lambda(value, f"layer_lam[{key!r}]")
        return lambdas
    if isinstance(layer_lam, torch.Tensor):
        layer_lam = layer_lam.tolist()
    if isinstance(layer_lam, (str, bytes)) or not isinstance(layer_lam, Sequence):
        raise ValueError(
            f"The 'layer_lam' parameter must be a sequence or a mapping. Got {layer_lam!r}."
        )
    if len(layer_lam) != len(names):
        raise ValueError(
            f"The 'layer_lam' parameter must have one value per penalised layer "
            f"({len(names)}: {names}). Got {len(layer_lam)} values."
        )
    for name, value in zip(names, layer_lam):
        lambdas[name] = _check_lambda(value, f"layer_lam[{name!r}]")
    return lambdas


def lambda_per_sample(lam: float, n_samples: int) -> float:
    """λ on the mean-loss scale: ``λ / N``."""
    if n_samples <= 0:
        raise ValueError(f"The 'n_samples' parameter must be positive. Got {n_samples}.")
    return float(lam) / n_samples


def lambda_summed(lam_per_sample: float, n_samples: int) -> float:
    """λ on the summed-loss scale from the mean-loss coefficient: ``λ_mean · N``."""
    if n_samples <= 0:
        raise ValueError(f"The 'n_samples' parameter must be positive. Got {n_samples}.")
    return float(lam_per_sample) * n_samples


def map_lambda(noise_std: float, laplace_scale: float | Sequence[float]) -> float | list[float]:
    """λ of the MAP estimate (Proposition 1): ``λ = 2 v² / s``.

    Gaussian label noise of standard deviation ``v`` and a Laplace prior of scale ``s`` on the
    weights give the single-parameter model with ``λ = 2v²/s``; a scale ``s_k`` per layer gives
    ``λ_k = 2v²/s_k``.

    >>> map_lambda(0.5, 0.25)
    2.0
    >>> map_lambda(1.0, [1.0, 2.0])
    [2.0, 1.0]
    """
    v = float(noise_std)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"The 'noise_std' parameter must be a positive number. Got {noise_std!r}.")
    scales = [laplace_scale] if not isinstance(laplace_scale, Sequence) else list(laplace_scale)
    out = []
    for s in scales:
        s = float(s)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(
                f"The 'laplace_scale' parameter must be positive. Got {laplace_scale!r}."
            )
        out.append(2.0 * v * v / s)
    return out if isinstance(laplace_scale, Sequence) else out[0]


def l1_norms(model: nn.Module) -> dict[str, float]:
    """``‖W_k‖₁`` for every penalised layer."""
    with torch.no_grad():
        return {name: float(m.weight.abs().sum()) for name, m in penalised_layers(model)}


def penalty_value(model: nn.Module, lambdas: Mapping[str, float]) -> float:
    """``Σ_k λ_k ‖W_k‖₁`` on the scale of ``lambdas``."""
    norms = l1_norms(model)
    return sum(lambdas[name] * norms[name] for name in norms)


UNPENALISED_GROUP = "unpenalised"


def param_groups(model: nn.Module, l1: Mapping[str, float]) -> list[dict]:
    """Optimizer parameter groups: one per penalised weight, one for everything else.

    Parameters
    ----------
    model : nn.Module
    l1 : mapping from layer name to the ``l1`` coefficient *on the optimizer's scale* (λ_k / N
        when the mean loss is back-propagated, see :func:`lambda_per_sample`).

    Each group carries ``name`` (the layer name) so that :func:`set_group_l1` can change λ_k
    during a run without rebuilding the optimizer. Biases and every other parameter go in the
    group named ``"unpenalised"`` with ``l1 = 0``.
    """
    groups = []
    penalised = set()
    for name, module in penalised_layers(model):
        coef = _check_lambda(l1.get(name, 0.0), f"l1[{name!r}]")
        groups.append({"params": [module.weight], "name": name, "l1": coef})
        penalised.add(id(module.weight))
    rest = [p for p in model.parameters() if id(p) not in penalised]
    if rest:
        groups.append({"params": rest, "name": UNPENALISED_GROUP, "l1": 0.0})
    return groups


def set_group_l1(optimizer: torch.optim.Optimizer, l1: Mapping[str, float]) -> None:
    """Set the ``l1`` hyperparameter of the named groups in place (λ as optimizer state)."""
    by_name = {g.get("name"): g for g in optimizer.param_groups}
    for name, coef in l1.items():
        if name not in by_name:
            raise ValueError(f"The optimizer has no parameter group named {name!r}.")
        by_name[name]["l1"] = _check_lambda(coef, f"l1[{name!r}]")
