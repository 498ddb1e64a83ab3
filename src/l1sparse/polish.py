"""A full-batch polish: converge a trained network to a stationary point of its own λ.

Stochastic or short proximal training leaves a network near, not at, a stationary point of
``L(Θ) + Σ_k λ_k Σ_i c_i |w_i|``. When the data fit in memory, :func:`polish` finishes the job
with a quasi-Newton solve of the split form

.. math::

    \\min_{W^\\pm \\ge 0,\\ b} \\; L(W^+ - W^-, b) + \\sum_k \\lambda_k \\sum_i c_i (W^+_i + W^-_i),

a smooth objective with bounds (scipy's L-BFGS-B, float64, every penalised weight; biases
free), started from the current weights. A weight whose two halves both end at their bound 0 is
an exact zero.

With a smooth activation (tanh, sigmoid, GELU, ELU) this typically reaches residuals far below
λ on every weight. With ReLU the fidelity is not differentiable at the kinks and L-BFGS-B
stalls early (its line search fails); the result is then reported as not converged, and the
stationarity certificate says how far it got.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from .losses import check_task, fidelity
from .penalty import penalised_layers

__all__ = ["CONVERGED_VIOLATION", "PolishResult", "polish"]

log = logging.getLogger(__name__)

CONVERGED_VIOLATION = 1e-3  # a polish "converged" when every residual is below 1e-3·λ_k c_i


@dataclass(frozen=True)
class PolishResult:
    """What :func:`polish` did: iterations, objective before and after, and why it stopped."""

    iterations: int
    evaluations: int
    objective_before: float
    objective_after: float
    converged: bool  # max_violation ≤ CONVERGED_VIOLATION
    max_violation: float  # largest first-order violation (weights; biases) relative to λc
    message: str
    seconds: float
    nnz_before: int
    nnz_after: int

    def as_dict(self) -> dict:
        return {"iterations": self.iterations, "evaluations": self.evaluations,
                "objective_before": self.objective_before,
                "objective_after": self.objective_after, "converged": self.converged,
                "max_violation": self.max_violation,
                "message": self.message, "seconds": self.seconds,
                "nnz_before": self.nnz_before, "nnz_after": self.nnz_after}


def polish(model: nn.Module, X: Tensor, y: Tensor, *, task: str, lambdas: Mapping[str, float],
           weights: Mapping[str, Tensor] | None = None, max_iter: int = 5000,
           tol: float = 1e-6, batch_size: int | None = None) -> PolishResult:
    """Polish ``model`` in place to a stationary point of the ℓ1 objective at ``lambdas``.

    Parameters
    ----------
    model : nn.Module
        The trained network; its weights are replaced by the polished ones (same dtype and
        device). Its train/eval mode is left as it was; the fidelity is evaluated in eval mode.
    X, y : Tensor
        The whole training set (full batch).
    task : {"regression", "classification"}
    lambdas : mapping from layer name to λ_k (summed-loss scale)
    weights : mapping from layer name to a tensor of the weight's shape, optional
        Per-weight penalty weights ``c_i ≥ 0`` (1 if omitted).
    max_iter : int, default 5000
        L-BFGS-B iterations at most.
    tol : float, default 1e-6
        Stop when every projected-gradient entry is below ``tol·min(λ_k c_i)`` (relative to
        the smallest positive penalty), or when the objective stops decreasing.
    batch_size : int, optional
        Evaluate the fidelity in chunks of this many samples (memory); the objective is still
        the full-batch one.

    Returns
    -------
    PolishResult

    Raises
    ------
    ValueError
        For an unknown task, a layer without λ, ``max_iter < 1`` or a negative ``tol``.
    """
    check_task(task)
    if int(max_iter) < 1:
        raise ValueError(f"The 'max_iter' parameter must be a positive integer. Got {max_iter}.")
    if not tol >= 0:
        raise ValueError(f"The 'tol' parameter must be a number >= 0. Got {tol}.")
    t0 = time.perf_counter()
    layers = penalised_layers(model)
    missing = [n for n, _ in layers if n not in lambdas]
    if missing:
        raise ValueError(f"The 'lambdas' mapping has no value for the layers {missing}.")
    work = copy.deepcopy(model).to(torch.float64)
    work.eval()
    layers = penalised_layers(work)
    Xd = X.to(device=next(work.parameters()).device, dtype=torch.float64)
    yd = y.to(Xd.device)
    if task == "regression":
        yd = yd.to(torch.float64)
    pen_ids = {id(m.weight): name for name, m in layers}
    params = [p for p in work.parameters() if p.requires_grad]
    penalised = [p for p in params if id(p) in pen_ids]
    free = [p for p in params if id(p) not in pen_ids]
    pen = []
    for p in penalised:
        name = pen_ids[id(p)]
        c = torch.ones_like(p) if weights is None or weights.get(name) is None else \
            torch.as_tensor(weights[name], dtype=torch.float64, device=p.device)
        pen.append((float(lambdas[name]) * c).reshape(-1))
    pen_vec = torch.cat(pen).cpu().numpy() if pen else np.zeros(0)
    m = pen_vec.size
    sizes = [p.numel() for p in penalised] + [p.numel() for p in free]
    chunk = X.shape[0] if batch_size is None else int(batch_size)

    def assign(x: np.ndarray) -> None:
        w = x[:m] - x[m:2 * m]
        flat = np.concatenate([w, x[2 * m:]])
        offset = 0
        with torch.no_grad():
            for p, size in zip(penalised + free, sizes):
                p.copy_(torch.from_numpy(flat[offset:offset + size]).reshape(p.shape))
                offset += size

    def fun(x: np.ndarray):
        assign(x)
        loss_total = 0.0
        grads = [torch.zeros_like(p) for p in penalised + free]
        for start in range(0, Xd.shape[0], chunk):
            loss = fidelity(work(Xd[start:start + chunk]), yd[start:start + chunk], task)
            for a, g in zip(grads, torch.autograd.grad(loss, penalised + free,
                                                        allow_unused=True)):
                if g is not None:
                    a.add_(g)
            loss_total += float(loss.detach())
        gw = torch.cat([g.reshape(-1) for g in grads[:len(penalised)]]).cpu().numpy() \
            if penalised else np.zeros(0)
        gb = torch.cat([g.reshape(-1) for g in grads[len(penalised):]]).cpu().numpy() \
            if free else np.zeros(0)
        obj = loss_total + float(pen_vec @ (x[:m] + x[m:2 * m]))
        return obj, np.concatenate([gw + pen_vec, -gw + pen_vec, gb])

    with torch.no_grad():
        w0 = torch.cat([p.reshape(-1) for p in penalised]).cpu().numpy() if penalised \
            else np.zeros(0)
        b0 = torch.cat([p.reshape(-1) for p in free]).cpu().numpy() if free else np.zeros(0)
    x0 = np.concatenate([np.maximum(w0, 0), np.maximum(-w0, 0), b0])
    before, _ = fun(x0)
    positive = pen_vec[pen_vec > 0]
    gtol = tol * (float(positive.min()) if positive.size else 1.0)
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * (2 * m) + [(None, None)] * (x0.size - 2 * m),
                   options={"maxiter": int(max_iter), "maxfun": 2 * int(max_iter),
                            "maxcor": 30, "gtol": gtol, "ftol": 1e-15})
    x = res.x
    d = x[:m] - x[m:2 * m]
    x = np.concatenate([np.maximum(d, 0), np.maximum(-d, 0), x[2 * m:]])
    after, grad = fun(x)
    if after > before:  # never hand back something worse than what came in
        x, d = x0, x0[:m] - x0[m:2 * m]
        after, grad = fun(x)
    gw = grad[:m] - pen_vec
    scale = np.where(pen_vec > 0, pen_vec, 1.0)
    viol = np.maximum(np.abs(gw) - pen_vec, 0.0)
    nz = d != 0
    viol[nz] = np.abs(gw[nz] + pen_vec[nz] * np.sign(d[nz]))
    viol = viol / scale
    bias = float(np.abs(grad[2 * m:]).max(initial=0.0)) / (float(positive.min())
                                                            if positive.size else 1.0)
    max_violation = max(float(viol.max(initial=0.0)), bias)
    assign(x)
    with torch.no_grad():
        for (pm, pw) in zip((p for p in model.parameters() if p.requires_grad), params):
            pm.copy_(pw.to(dtype=pm.dtype, device=pm.device))
    message = res.message if isinstance(res.message, str) else str(res.message)
    # scipy's own "success" includes stalls (relative reduction of f): judge by the conditions
    converged = max_violation <= CONVERGED_VIOLATION
    if not converged:
        log.warning("polish stopped at a first-order violation of %.3g·lambda (> %g) after %d "
                    "iterations (%s): not a stationary point (ReLU stalls at its kinks; large "
                    "networks may need more max_iter)",
                    max_violation, CONVERGED_VIOLATION, res.nit, message)
    return PolishResult(iterations=int(res.nit), evaluations=int(res.nfev),
                        objective_before=float(before), objective_after=float(after),
                        converged=converged, max_violation=max_violation, message=message,
                        seconds=time.perf_counter() - t0,
                        nnz_before=int(np.count_nonzero(w0)), nnz_after=int(np.count_nonzero(d)))
