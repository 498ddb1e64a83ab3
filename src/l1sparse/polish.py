"""A full-batch polish: converge a trained network to a stationary point of its ℓ1 objective,
and choose λ on the polished problem so that the count stays what was asked.

Stochastic or short proximal training leaves a network near, not at, a stationary point of
``L(Θ) + Σ_k λ_k Σ_i c_i |w_i|``. When the data fit in memory, :func:`polish` finishes the job
with an active-set quasi-Newton method (float64, every penalised weight, biases free), started
from the current weights:

1. fix each weight's sign (the orthant of the current weights; a zero weight whose gradient
   violates ``|∂L/∂w_i| ≤ λ_k c_i`` is released into the orthant opposite its gradient, the
   other zeros stay fixed at 0);
2. on that orthant the objective is smooth, ``L(Θ) + Σ λ_k c_i s_i w_i``: minimise it with
   scipy's L-BFGS-B, each weight bounded to its own half-line, so that a weight that would
   change sign stops at an exact zero;
3. repeat until no zero violates its condition (or the iteration budget is spent).

Measured here (``--polish`` on a full-batch tanh MLP, reweighted ℓ1): the former split form
``w = w⁺ − w⁻`` of L-BFGS-B stalled at a largest violation of 44·λ with 17 % of the nonzeros
meeting their condition; this method ends at 0.002·λ with all of them (the two halves of the
split form make every weight's penalty direction degenerate, which the orthant removes).

The λ at which a warm run ends need not be one whose stationary point has the run's count
(``lambda_meaning`` of a warm fit): polished at it, a network can lose most of its nonzeros.
:func:`polish_to_target` therefore re-chooses λ on the polished problem: each solve starts from
the trained weights, and the λ_k of each scope are scaled by bracketing steps (the
sorted-gradient rule :func:`l1sparse.rule.propose` on ``|∂L/∂w_i| / (λ_k c_i)``) until the
polished count is within the target's tolerance.

With a smooth activation (tanh, sigmoid, GELU, ELU) a solve typically reaches residuals far
below λ. With ReLU the fidelity is not differentiable at the kinks and L-BFGS-B stalls early;
the result is then reported as not converged, and the stationarity certificate says how far it
got.
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

__all__ = ["CONVERGED_VIOLATION", "PolishResult", "PolishSelection", "polish",
           "polish_to_target"]

log = logging.getLogger(__name__)

CONVERGED_VIOLATION = 1e-3  # a polish "converged" when every residual is below 1e-3·λ_k c_i
MAX_ROUNDS = 20  # releases of violating zeros (step 3 of the module docstring) at most


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


class _Problem:
    """The polished objective of one model, in float64 on a flat vector ``[weights, others]``."""

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, task: str,
                 lambdas: Mapping[str, float], weights, batch_size: int | None) -> None:
        self.work = copy.deepcopy(model).to(torch.float64)
        self.work.eval()
        layers = penalised_layers(self.work)
        self.X = X.to(device=next(self.work.parameters()).device, dtype=torch.float64)
        self.y = y.to(self.X.device)
        if task == "regression":
            self.y = self.y.to(torch.float64)
        self.task = task
        ids = {id(m.weight): name for name, m in layers}
        self.params = [p for p in self.work.parameters() if p.requires_grad]
        self.penalised = [p for p in self.params if id(p) in ids]
        self.free = [p for p in self.params if id(p) not in ids]
        pen = []
        for p in self.penalised:
            name = ids[id(p)]
            c = torch.ones_like(p) if weights is None or weights.get(name) is None else \
                torch.as_tensor(weights[name], dtype=torch.float64, device=p.device)
            pen.append((float(lambdas[name]) * c).reshape(-1))
        self.pen = torch.cat(pen).cpu().numpy() if pen else np.zeros(0)
        self.m = self.pen.size
        self.chunk = X.shape[0] if batch_size is None else int(batch_size)

    def vector(self) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([p.reshape(-1) for p in self.penalised + self.free]).cpu().numpy()

    def assign(self, x: np.ndarray) -> None:
        offset = 0
        with torch.no_grad():
            for p in self.penalised + self.free:
                size = p.numel()
                p.copy_(torch.from_numpy(x[offset:offset + size]).reshape(p.shape))
                offset += size

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The summed fidelity and its gradient at ``x``."""
        self.assign(x)
        total = 0.0
        order = self.penalised + self.free
        grads = [torch.zeros_like(p) for p in order]
        for start in range(0, self.X.shape[0], self.chunk):
            loss = fidelity(self.work(self.X[start:start + self.chunk]),
                            self.y[start:start + self.chunk], self.task)
            for a, g in zip(grads, torch.autograd.grad(loss, order, allow_unused=True)):
                if g is not None:
                    a.add_(g)
            total += float(loss.detach())
        return total, torch.cat([g.reshape(-1) for g in grads]).cpu().numpy() \
            if grads else np.zeros(0)

    def objective(self, x: np.ndarray) -> float:
        return self.loss_grad(x)[0] + float(self.pen @ np.abs(x[:self.m]))

    def violation(self, x: np.ndarray) -> float:
        """The largest first-order violation at ``x``, relative to λ_k c_i (biases: to the
        smallest positive λ_k c_i)."""
        _, grad = self.loss_grad(x)
        m, pen = self.m, self.pen
        w, g = x[:m], grad[:m]
        scale = np.where(pen > 0, pen, 1.0)
        viol = np.maximum(np.abs(g) - pen, 0.0)
        nz = w != 0
        viol[nz] = np.abs(g[nz] + pen[nz] * np.sign(w[nz]))
        positive = pen[pen > 0]
        bias = float(np.abs(grad[m:]).max(initial=0.0)) / (float(positive.min())
                                                            if positive.size else 1.0)
        return max(float((viol / scale).max(initial=0.0)), bias)


def _solve(problem: _Problem, x: np.ndarray, max_iter: int, gtol: float
           ) -> tuple[np.ndarray, int, int, str]:
    """The active-set loop of the module docstring; returns ``(x, iterations, evaluations,
    message)``."""
    m, pen = problem.m, problem.pen
    iterations = evaluations = 0
    message = "no iteration"
    for round_ in range(MAX_ROUNDS):
        _, grad = problem.loss_grad(x)
        w, g = x[:m], grad[:m]
        sign = np.sign(w)
        release = (w == 0) & (np.abs(g) > pen)
        if round_ > 0 and not release.any():
            break
        if iterations >= max_iter:
            message = "iteration budget spent"
            break
        sign[release] = -np.sign(g[release])
        low = np.where(sign < 0, -np.inf, 0.0)
        high = np.where(sign > 0, np.inf, 0.0)
        bounds = list(zip(low, high)) + [(None, None)] * (x.size - m)
        linear = np.concatenate([pen * sign, np.zeros(x.size - m)])

        def fun(z: np.ndarray):
            loss, gz = problem.loss_grad(z)
            return loss + float(linear @ z), gz + linear

        budget = max_iter - iterations
        res = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": budget, "maxfun": 2 * budget, "maxcor": 30,
                                "gtol": gtol, "ftol": 1e-15})
        x = res.x.copy()
        x[:m][sign == 0] = 0.0
        iterations += int(res.nit)
        evaluations += int(res.nfev)
        message = res.message if isinstance(res.message, str) else str(res.message)
    return x, iterations, evaluations, message


def polish(model: nn.Module, X: Tensor, y: Tensor, *, task: str, lambdas: Mapping[str, float],
           weights: Mapping[str, Tensor] | None = None, max_iter: int = 5000,
           tol: float = 1e-6, batch_size: int | None = None, warn: bool = True
           ) -> PolishResult:
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
        L-BFGS-B iterations at most, over all rounds of the active-set loop.
    tol : float, default 1e-6
        Stop a round when every projected-gradient entry is below ``tol·min(λ_k c_i)``
        (relative to the smallest positive penalty), or when the objective stops decreasing.
    batch_size : int, optional
        Evaluate the fidelity in chunks of this many samples (memory); the objective is still
        the full-batch one.
    warn : bool, default True
        Log a warning when the solve ends short of stationarity.

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
    missing = [n for n, _ in penalised_layers(model) if n not in lambdas]
    if missing:
        raise ValueError(f"The 'lambdas' mapping has no value for the layers {missing}.")
    problem = _Problem(model, X, y, task, lambdas, weights, batch_size)
    x0 = problem.vector()
    before = problem.objective(x0)
    positive = problem.pen[problem.pen > 0]
    gtol = tol * (float(positive.min()) if positive.size else 1.0)
    x, iterations, evaluations, message = _solve(problem, x0, int(max_iter), gtol)
    after = problem.objective(x)
    if after > before:  # never hand back something worse than what came in
        x, after = x0, before
    max_violation = problem.violation(x)
    problem.assign(x)
    with torch.no_grad():
        for pm, pw in zip((p for p in model.parameters() if p.requires_grad), problem.params):
            pm.copy_(pw.to(dtype=pm.dtype, device=pm.device))
    # scipy's own "success" includes stalls (relative reduction of f): judge by the conditions
    converged = max_violation <= CONVERGED_VIOLATION
    if not converged and warn:
        log.warning("polish stopped at a first-order violation of %.3g·lambda (> %g) after %d "
                    "iterations (%s): not a stationary point (ReLU stalls at its kinks; large "
                    "networks may need more max_iter)",
                    max_violation, CONVERGED_VIOLATION, iterations, message)
    m = problem.m
    return PolishResult(iterations=iterations, evaluations=evaluations,
                        objective_before=float(before), objective_after=float(after),
                        converged=converged, max_violation=max_violation, message=message,
                        seconds=time.perf_counter() - t0,
                        nnz_before=int(np.count_nonzero(x0[:m])),
                        nnz_after=int(np.count_nonzero(x[:m])))


# --------------------------------------------------------------------------- λ on the polish


def _next_scale(tried: list[tuple[float, int]], target: float, max_step: float) -> float:
    """The next multiplier of λ from the ``(t, count)`` solves so far (count off the target):
    a secant step in ``(log t, log count)``, inside the bracket, at most ``max_step`` away.

    >>> _next_scale([(1.0, 20)], 80, 10.0)  # count ∝ 1/t: a quarter of λ
    0.25
    >>> round(_next_scale([(1.0, 20), (0.5, 40)], 80, 10.0), 6)  # slope -1 through both
    0.25
    """
    import math

    t, count = tried[-1]
    dense = [u for u, c in tried if c > target]  # too many nonzeros: λ must be above these
    sparse = [u for u, c in tried if c < target]
    low = max(dense) if dense else 0.0
    high = min(sparse) if sparse else math.inf
    slope = -1.0
    if len(tried) >= 2:
        t0, c0 = tried[-2]
        if t0 != t and c0 > 0 and count > 0:
            fitted = (math.log(count) - math.log(c0)) / (math.log(t) - math.log(t0))
            if fitted < -1e-3:
                slope = fitted
    step = math.log(max(target, 0.5) / max(count, 0.5)) / slope
    step = min(max(step, -math.log(max_step)), math.log(max_step))
    proposal = t * math.exp(step)
    if low > 0 and high < math.inf:
        margin = (high / low) ** 0.1  # stay clear of the ends
        if not (low * margin < proposal < high / margin):
            proposal = math.sqrt(low * high)
    elif proposal <= low:
        proposal = low * 2
    elif proposal >= high:
        proposal = high / 2
    return proposal


@dataclass(frozen=True)
class PolishSelection:
    """What :func:`polish_to_target` did: the λ_k returned (those of the returned solve), its
    counts, whether they meet the target, and every solve tried.

    ``history`` holds one dict per solve: ``lambdas``, ``nnz`` (per scope), ``met``,
    ``max_violation`` and ``converged``.
    """

    lambdas: dict[str, float]
    nnz: dict[str, int]
    met: bool
    solves: int
    history: tuple[dict, ...]
    result: PolishResult
    seconds: float

    def as_dict(self) -> dict:
        return {**self.result.as_dict(), "lambdas": dict(self.lambdas), "met": self.met,
                "solves": self.solves, "history": [dict(h) for h in self.history],
                "seconds_total": self.seconds}

    def counts_line(self) -> str:
        """The nonzeros at each λ tried, for a message."""
        return "; ".join(f"x{h['scale']} -> {h['nnz']}" for h in self.history)


def polish_to_target(model: nn.Module, X: Tensor, y: Tensor, *, task: str, target,
                     lambdas: Mapping[str, float], weights: Mapping[str, Tensor] | None = None,
                     layers_required: int | None = None, max_solves: int = 10,
                     max_iter: int = 5000, max_step: float = 10.0,
                     batch_size: int | None = None) -> PolishSelection:
    """Polish ``model`` and re-choose λ on the polished problem until its count meets ``target``.

    Every solve starts from the weights ``model`` has on entry and polishes them at
    ``t_k · lambdas`` (the same ``t_k`` for all layers of a target's scope, ``t = 1`` first).
    After a solve whose scope count is off, ``t_k`` moves by :func:`_next_scale`: a secant step
    in ``(log t, log nnz)`` through the last two solves (the first step assumes the count
    inversely proportional to ``t``), kept inside the bracket of the tightest multipliers known
    on each side and moved by at most a factor ``max_step`` per solve. (The sorted-gradient
    rule is no help here: the polish leaves whole units dead, whose weights have an exactly zero
    gradient, so the ranks it reads are zero.)

    Parameters
    ----------
    model : nn.Module
        The trained network; on return it holds the returned solve's weights: the first that
        met the target, else the one closest to it.
    X, y, task, weights, max_iter, batch_size :
        As for :func:`polish` (``max_iter`` per solve).
    target : l1sparse.targets.Target
    lambdas : mapping from layer name to λ_k
        The run's λ_k (summed scale), the starting point.
    layers_required : int, optional
        A per-layer target is met when this many scopes are within their tolerance (default:
        all).
    max_solves : int, default 10
        Polishing solves at most.
    max_step : float, default 10
        The largest factor by which a scope's λ moves between two solves.

    Returns
    -------
    PolishSelection

    Raises
    ------
    ValueError
        For ``max_solves < 1``, ``max_step <= 1``, a ``layers_required`` outside ``[1, K]``,
        or the errors of :func:`polish`.
    """
    from .sparsity import nnz_per_layer

    if int(max_solves) != max_solves or max_solves < 1:
        raise ValueError(f"The 'max_solves' parameter must be a positive integer. "
                         f"Got {max_solves!r}.")
    if not max_step > 1:
        raise ValueError(f"The 'max_step' parameter must be a number > 1. Got {max_step!r}.")
    scopes = target.scopes
    required = len(scopes) if layers_required is None else layers_required
    if not 1 <= required <= len(scopes):
        raise ValueError(f"The 'layers_required' parameter must be in [1, {len(scopes)}]. "
                         f"Got {layers_required!r}.")
    t0 = time.perf_counter()
    start = copy.deepcopy(model.state_dict())
    scale = [1.0] * len(scopes)
    tried: list[list[tuple[float, int]]] = [[] for _ in scopes]
    history: list[dict] = []
    best: dict = {}
    for solve in range(1, int(max_solves) + 1):
        model.load_state_dict(start)
        lam_now = {name: float(lambdas[name]) * t for s, t in zip(scopes, scale)
                   for name in s.layers}
        result = polish(model, X, y, task=task, lambdas=lam_now, weights=weights,
                        max_iter=max_iter, batch_size=batch_size, warn=False)
        nnz = nnz_per_layer(model)
        counts = [sum(nnz[n] for n in s.layers) for s in scopes]
        inside = [abs(c - s.nnz) <= s.tol + 1e-9 for c, s in zip(counts, scopes)]
        met = sum(inside) >= required
        history.append({"scale": [round(t, 6) for t in scale] if len(scale) > 1
                        else round(scale[0], 6), "lambdas": lam_now,
                        "nnz": counts if len(counts) > 1 else counts[0], "met": met,
                        "max_violation": result.max_violation, "converged": result.converged})
        log.info("polish solve %d: lambda x %s -> nnz %s%s", solve, scale, counts,
                 " (met)" if met else "")
        distance = sum(abs(c - s.nnz) for c, s in zip(counts, scopes))
        key = (met, -distance, result.converged)
        if not best or key > best["key"]:
            best = {"key": key, "state": copy.deepcopy(model.state_dict()), "lambdas": lam_now,
                    "nnz": dict(nnz), "met": met, "result": result}
        if met or solve == max_solves:
            break
        for k, (scope, count) in enumerate(zip(scopes, counts)):
            if not inside[k]:
                tried[k].append((scale[k], count))
                scale[k] = _next_scale(tried[k], scope.nnz, max_step)
    model.load_state_dict(best["state"])
    if not best["result"].converged:
        log.warning("the returned polish stopped at a first-order violation of %.3g·lambda "
                    "(> %g): not a stationary point", best["result"].max_violation,
                    CONVERGED_VIOLATION)
    return PolishSelection(lambdas=best["lambdas"], nnz=best["nnz"], met=best["met"],
                           solves=len(history), history=tuple(history), result=best["result"],
                           seconds=time.perf_counter() - t0)
