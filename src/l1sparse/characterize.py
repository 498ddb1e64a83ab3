"""Characterising sparsity by λ through the first-order conditions (paper §3, docs/design.md §4).

At a (local) minimiser Θ* of ``L(Θ) + Σ_k λ_k ‖W_k‖₁`` with ``γ_j = |∂L/∂w_j(Θ*)|`` taken on
the whole training set (summed loss):

* ``w_j ≠ 0``  ⇒  ``∂L/∂w_j = −λ_k sign(w_j)``, so ``γ_j = λ_k``;
* ``w_j = 0``  ⇒  ``γ_j ≤ λ_k``;
* ``∂L/∂b = 0`` for the (unpenalised) biases.

:func:`characterize` measures how well a trained model meets these conditions, layer by layer,
and hands the sorted gradient magnitudes to the λ selector.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .losses import check_task, fidelity
from .penalty import L1Penalty, penalised_layers

__all__ = [
    "FullGradient",
    "LayerCharacterization",
    "Characterization",
    "full_gradient",
    "characterize",
    "lambda_max",
    "lasso_lambda_max",
    "Stationarity",
    "stationarity",
    "GRADIENT_SOURCES",
]


@dataclass
class FullGradient:
    """Gradient of the summed fidelity over the whole data set."""

    loss: float
    weights: dict[str, Tensor]  # per penalised layer, same shape as the weight
    others: dict[str, Tensor]  # every other parameter (biases), by parameter name


def full_gradient(model: nn.Module, X: Tensor, y: Tensor, *, task: str,
                  batch_size: int = 8192, include=None, exclude=None) -> FullGradient:
    """``∇L(Θ)`` of the summed fidelity over all of ``(X, y)``, accumulated in batches.

    ``weights`` holds the penalised tensors (``include``/``exclude`` as in
    :func:`~l1sparse.tensors.select_tensors`), ``others`` every other parameter. The model's
    ``.grad`` fields are left untouched.
    """
    check_task(task)
    layers = penalised_layers(model, include, exclude)
    weight_ids = {id(m.weight): name for name, m in layers}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    acc = [torch.zeros_like(p) for p in params]
    loss_total = 0.0
    for start in range(0, X.shape[0], batch_size):
        loss = fidelity(model(X[start:start + batch_size]), y[start:start + batch_size], task)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for a, g in zip(acc, grads):
            if g is not None:
                a.add_(g)
        loss_total += float(loss.detach())
    weights, others = {}, {}
    for (name, p), g in zip(named, acc):
        if id(p) in weight_ids:
            weights[weight_ids[id(p)]] = g
        else:
            others[name] = g
    return FullGradient(loss_total, weights, others)


@dataclass
class LayerCharacterization:
    """First-order-condition check of one layer at λ_k."""

    name: str
    lam: float
    nnz: int
    nnz_ok: int  # nonzeros with |∂_jL + λ sign(w_j)| ≤ tol·λ
    n_zero: int
    zero_ok: int  # zeros with γ_j ≤ (1 + tol)·λ
    max_violation: float  # relative to λ (absolute when λ = 0)
    l1: float  # ‖W_k‖₁
    gamma: Tensor = field(repr=False)  # |∂L/∂w_j| of the layer, sorted decreasing

    @property
    def share_ok(self) -> float:
        return (self.nnz_ok + self.zero_ok) / max(1, self.nnz + self.n_zero)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "lambda": self.lam, "nnz": self.nnz, "nnz_ok": self.nnz_ok,
            "n_zero": self.n_zero, "zero_ok": self.zero_ok,
            "max_violation": self.max_violation, "share_ok": self.share_ok,
        }


@dataclass
class Characterization:
    """The characterisation report of docs/design.md §4."""

    layers: list[LayerCharacterization]
    loss: float  # summed fidelity L(Θ) over the data
    tol: float
    bias_grad_max: float  # max |∂L/∂b| over the unpenalised parameters

    @property
    def all_ok(self) -> bool:
        return all(l.nnz_ok == l.nnz and l.zero_ok == l.n_zero for l in self.layers)

    @property
    def max_violation(self) -> float:
        return max(l.max_violation for l in self.layers)

    def gamma_sorted(self) -> Tensor:
        """All layers' gradient magnitudes together, sorted decreasing."""
        return torch.cat([l.gamma for l in self.layers]).sort(descending=True).values

    def __getitem__(self, name: str) -> LayerCharacterization:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def summary(self) -> str:
        rows = [f"first-order conditions (tol {self.tol:g}, violations relative to lambda_k):",
                f"{'layer':<10}{'lambda_k':>12}{'nonzero ok':>16}{'zero ok':>18}{'max viol':>11}"]
        for l in self.layers:
            rows.append(f"{l.name:<10}{l.lam:>12.5g}{f'{l.nnz_ok}/{l.nnz}':>16}"
                        f"{f'{l.zero_ok}/{l.n_zero}':>18}{l.max_violation:>11.3g}")
        rows.append(f"largest |dL/db| over unpenalised parameters: {self.bias_grad_max:.3g}")
        return "\n".join(rows)


def _layer_report(name: str, w: Tensor, g: Tensor, lam: float, tol: float
                  ) -> LayerCharacterization:
    gamma = g.abs().flatten()
    nonzero = (w != 0).flatten()
    scale = lam if lam > 0 else 1.0
    dist = L1Penalty.distance(g, w, lam).flatten()  # the first-order residual, entrywise
    resid = dist[nonzero]
    nz_ok = int((resid <= tol * scale).sum())
    excess = dist[~nonzero]
    zero_ok = int((excess <= tol * scale).sum())
    worst = max(float(resid.max()) if resid.numel() else 0.0,
                float(excess.max()) if excess.numel() else 0.0)
    return LayerCharacterization(
        name=name, lam=lam, nnz=int(nonzero.sum()), nnz_ok=nz_ok,
        n_zero=int((~nonzero).sum()), zero_ok=zero_ok, max_violation=worst / scale,
        l1=float(w.abs().sum()),
        gamma=gamma.sort(descending=True).values,
    )


@torch.no_grad()
def _weights(model: nn.Module, include=None, exclude=None) -> dict[str, Tensor]:
    return {name: m.weight.detach() for name, m in penalised_layers(model, include, exclude)}


def characterize(model: nn.Module, X: Tensor, y: Tensor, *, task: str,
                 lambdas: Mapping[str, float], tol: float = 1e-3,
                 batch_size: int = 8192, gradient: FullGradient | None = None,
                 include=None, exclude=None) -> Characterization:
    """Check the first-order conditions of the ℓ1 model at the current weights.

    Parameters
    ----------
    model : nn.Module
        A trained network.
    X, y : Tensor
        The whole training set (the conditions are about the full-data objective).
    task : {"regression", "classification"}
    lambdas : mapping from layer name to λ_k, summed-loss scale
        (see :func:`l1sparse.penalty.resolve_lambdas`).
    tol : float, default 1e-3
        Relative tolerance of the conditions.
    gradient : FullGradient, optional
        A gradient already computed at these weights, to avoid a second pass over the data.
    include, exclude : patterns, optional
        The penalised tensors (:func:`~l1sparse.tensors.select_tensors`); the others count
        with the biases.

    Returns
    -------
    Characterization
    """
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"The 'tol' parameter must be a finite number >= 0. Got {tol}.")
    grad = gradient if gradient is not None else full_gradient(
        model, X, y, task=task, batch_size=batch_size, include=include, exclude=exclude)
    weights = _weights(model, include, exclude)
    layers = [_layer_report(name, weights[name], grad.weights[name], float(lambdas[name]), tol)
              for name in weights]
    bias_max = max((float(g.abs().max()) for g in grad.others.values() if g.numel()),
                   default=0.0)
    return Characterization(layers, grad.loss, tol, bias_max)


def lasso_lambda_max(X: Tensor, y: Tensor) -> float:
    """Smallest λ (summed scale) at which the Lasso with intercept has all weights zero.

    ``λ_max = 2 max_j |X_jᵀ (y − ȳ)|`` for ``L = Σ_i ‖w·x_i + b − y_i‖²``; in scikit-learn's
    units this is ``alpha_max · 2N``.
    """
    y2 = y.reshape(y.shape[0], -1).to(X.dtype)
    return float(2 * (X.reshape(X.shape[0], -1).T @ (y2 - y2.mean(dim=0))).abs().max())


def lambda_max(model: nn.Module, X: Tensor, y: Tensor, *, task: str) -> float:
    """λ_max of a linear model (one penalised layer): ``max_j |∂L/∂w_j|`` at ``w = 0``.

    The bias is set to its optimum with zero weights (the mean of ``y`` for regression, the
    log class frequencies for classification), so for the convex case this is the smallest λ
    whose solution is all zero. The model itself is not modified.

    Raises
    ------
    ValueError
        If the model has more than one penalised layer (for a network, ``w = 0`` is a
        stationary point for every λ and this bound says nothing).
    """
    check_task(task)
    layers = penalised_layers(model)
    if len(layers) != 1:
        raise ValueError(
            f"lambda_max needs a linear model (one penalised layer); this model has {len(layers)}."
        )
    probe = copy.deepcopy(model)
    layer = penalised_layers(probe)[0][1]
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            if task == "regression":
                layer.bias.copy_(y.reshape(y.shape[0], -1).to(layer.bias.dtype).mean(dim=0))
            else:
                counts = torch.bincount(y, minlength=layer.bias.numel()).to(layer.bias.dtype)
                layer.bias.copy_(torch.log(counts.clamp_min(1e-12) / counts.sum()))
    grad = full_gradient(probe, X, y, task=task)
    return L1Penalty.lambda_max(next(iter(grad.weights.values())))


# --------------------------------------------------------------------------- the certificate

GRADIENT_SOURCES = ("full-data", "estimated")


@dataclass(frozen=True)
class Stationarity:
    """The stationarity certificate of a result: how well it meets the first-order conditions
    of the (weighted) ℓ1 model at its own λ_k (see :func:`stationarity`).

    ``nonzeros_ok`` and ``zeros_ok`` are shares in [0, 1] (``None`` when there are no
    nonzeros, or no zeros); ``median_residual`` is the median over the nonzeros of
    ``|∂L/∂w + λ_k c_i sign(w)| / (λ_k c_i)``; ``layers`` holds the same per layer (plus its
    ``lambda``, ``nnz``, ``n_zero`` and ``max_violation``).
    """

    nonzeros_ok: float | None
    zeros_ok: float | None
    median_residual: float | None
    max_violation: float
    max_bias_gradient: float
    tol: float
    gradient: str
    layers: tuple[dict, ...]

    def as_dict(self) -> dict:
        return {"nonzeros_ok": self.nonzeros_ok, "zeros_ok": self.zeros_ok,
                "median_residual": self.median_residual, "max_violation": self.max_violation,
                "max_bias_gradient": self.max_bias_gradient, "tol": self.tol,
                "gradient": self.gradient, "layers": [dict(l) for l in self.layers]}

    def line(self) -> str:
        """One line for a person: ``stationarity (tol 0.05, full-data gradient): …``."""
        def share(v):
            return "n/a" if v is None else f"{100 * v:.1f} %"

        med = "n/a" if self.median_residual is None else f"{self.median_residual:.3g}"
        return (f"stationarity at lambda (tol {self.tol:g}, {self.gradient} gradient): "
                f"nonzeros ok {share(self.nonzeros_ok)}, zeros ok {share(self.zeros_ok)}, "
                f"median residual {med}·lambda, max |dL/db| {self.max_bias_gradient:.3g}")


def _share(ok: int, n: int) -> float | None:
    return ok / n if n else None


def stationarity(model: nn.Module, X: Tensor | None, y: Tensor | None, *, task: str,
                 lambdas: Mapping[str, float], weights: Mapping[str, Tensor] | None = None,
                 tol: float = 0.05, gradient: FullGradient | None = None,
                 gradient_source: str = "full-data", batch_size: int = 8192,
                 include=None, exclude=None) -> Stationarity:
    """The stationarity certificate: the first-order conditions at the model's own λ_k.

    For the (weighted) objective ``L(Θ) + Σ_k λ_k Σ_i c_i |w_i|`` (summed fidelity, docs/design.md §1)
    a weight meets its condition when

    * ``w_i ≠ 0``: ``|∂L/∂w_i + λ_k c_i sign(w_i)| ≤ tol·λ_k c_i``,
    * ``w_i = 0``: ``|∂L/∂w_i| ≤ (1 + tol)·λ_k c_i``.

    Where ``λ_k c_i = 0`` (an unpenalised layer) the tolerances are absolute (``tol``), as in
    :func:`characterize`.

    Parameters
    ----------
    model : nn.Module
    X, y : Tensor
        The whole training set (moved to the model's device batch by batch); unused when
        ``gradient`` is given.
    task : {"regression", "classification"}
    lambdas : mapping from layer name to λ_k (summed-loss scale)
    weights : mapping from layer name to a tensor of the weight's shape, optional
        Per-weight penalty weights ``c_i ≥ 0``; a missing layer (or None) means ``c_i = 1``.
    tol : float, default 0.05
    gradient : FullGradient, optional
        A gradient already computed at these weights.
    gradient_source : {"full-data", "estimated"}, default "full-data"
        What the gradient is: the summed fidelity over every training sample, or an estimate
        (a subsample scaled to the summed loss). Recorded as ``gradient``.
    include, exclude : patterns, optional
        The penalised tensors (:func:`~l1sparse.tensors.select_tensors`).

    Returns
    -------
    Stationarity

    Raises
    ------
    ValueError
        For a negative or non-finite ``tol``, an unknown ``gradient_source``, a layer without
        λ, or penalty weights of the wrong shape.
    """
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"The 'tol' parameter must be a finite number >= 0. Got {tol!r}.")
    if gradient_source not in GRADIENT_SOURCES:
        raise ValueError(f"The 'gradient_source' parameter must be one of "
                         f"{list(GRADIENT_SOURCES)}. Got {gradient_source!r}.")
    if gradient is None:
        device = next(model.parameters()).device
        gradient = full_gradient(model, X.to(device), y.to(device), task=task,
                                 batch_size=batch_size, include=include, exclude=exclude)
    current = _weights(model, include, exclude)
    missing = [n for n in current if n not in lambdas]
    if missing:
        raise ValueError(f"The 'lambdas' mapping has no value for the layers {missing}.")
    rows = []
    tot = {"nnz": 0, "nnz_ok": 0, "n_zero": 0, "zero_ok": 0}
    residuals = []
    worst = 0.0
    for name, w in current.items():
        g = gradient.weights[name].to(torch.float64)
        w = w.to(torch.float64)
        c = None if weights is None else weights.get(name)
        if c is None:
            c = torch.ones_like(w)
        else:
            c = torch.as_tensor(c, dtype=torch.float64, device=w.device)
            if c.shape != w.shape:
                raise ValueError(f"The penalty weights of layer {name!r} must have the shape "
                                 f"{tuple(w.shape)}. Got {tuple(c.shape)}.")
        lc = float(lambdas[name]) * c
        scale = torch.where(lc > 0, lc, torch.ones_like(lc))
        nz = w != 0
        dist = L1Penalty.distance(g, w, float(lambdas[name]), c) / scale  # in units of λc
        resid = dist[nz]
        excess = dist[~nz]
        nnz_ok = int((resid <= tol).sum())
        zero_ok = int((excess <= tol).sum())  # |g| ≤ (1 + tol)·λc (absolute tol at λc = 0)
        layer_worst = max(float(resid.max()) if resid.numel() else 0.0,
                          float(excess.clamp_min(0).max()) if excess.numel() else 0.0)
        worst = max(worst, layer_worst)
        residuals.append(resid)
        n, z = int(nz.sum()), int((~nz).sum())
        rows.append({"name": name, "lambda": float(lambdas[name]), "nnz": n, "n_zero": z,
                     "nonzeros_ok": _share(nnz_ok, n), "zeros_ok": _share(zero_ok, z),
                     "median_residual": float(resid.median()) if n else None,
                     "max_violation": layer_worst})
        for key, value in (("nnz", n), ("nnz_ok", nnz_ok), ("n_zero", z), ("zero_ok", zero_ok)):
            tot[key] += value
    allres = torch.cat(residuals) if residuals else torch.zeros(0)
    bias = max((float(g.abs().max()) for g in gradient.others.values() if g.numel()),
               default=0.0)
    return Stationarity(
        nonzeros_ok=_share(tot["nnz_ok"], tot["nnz"]), zeros_ok=_share(tot["zero_ok"],
                                                                       tot["n_zero"]),
        median_residual=float(allres.median()) if allres.numel() else None,
        max_violation=worst, max_bias_gradient=bias, tol=float(tol),
        gradient=gradient_source, layers=tuple(rows))
