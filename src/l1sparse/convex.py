"""Certified solves of the convex case: the linear model with an ℓ1 penalty (docs/design.md §4, §5).

For a model without hidden layer the objective is convex and the first-order conditions are
sufficient, so a solution can be *certified*: at ``(W, b)``, with ``G = ∇_W L`` of the summed
fidelity and ``c`` the per-weight penalty weights (1 for plain ℓ1),

.. math::

    v_j = \\begin{cases} |G_j + \\lambda c_j \\operatorname{sign}(W_j)| & W_j \\ne 0 \\\\
                         \\max(|G_j| - \\lambda c_j,\\ 0) & W_j = 0 \\end{cases}
    \\qquad\\text{(the distance of } -G_j \\text{ to } \\lambda c_j\\,\\partial|W_j|\\text{)},

and the solve is certified when ``max_j v_j / (λ c_j)`` and ``max |∂L/∂b| / λ`` are both below
a tolerance. The objective is the summed one of docs/design.md §1:

* regression, ``L = Σ_i (y_i − x_i·w − b)²`` — scikit-learn's ``Lasso(alpha=λ / (2N))``;
* classification, ``L = Σ_i CE(W x_i + b, y_i)`` with ``W`` of shape ``C × p`` and ``C``
  intercepts — ``LogisticRegression(l1_ratio=1, C=1/λ)`` for three classes or more.

Engines. Regression: scikit-learn's coordinate descent (:class:`sklearn.linear_model.Lasso`,
float64, warm-started) finds the support; an exact solve of the stationarity equations on that
support and sign pattern, with active-set corrections, brings the violation down to rounding
error, and the certificate decides. Classification: scipy's L-BFGS-B on the split form
``W = W⁺ − W⁻``, ``W⁺, W⁻ ≥ 0`` (a smooth objective with bounds, so the zeros are exact), in
internally standardised coordinates (centred, unit-variance columns: an exact
reparametrisation with per-weight penalty weights ``c / s_j``, which makes the problem well
conditioned whatever the scale of the features).

:func:`select` chooses λ for an exact support size with the paper's rule on certified solves and
then places λ at the geometric middle of the interval on which the support has that size.

Examples
--------
>>> from sklearn.datasets import load_diabetes
>>> X, y = load_diabetes(return_X_y=True, scaled=False)
>>> sel = select(X, y, 5, task="regression")
>>> int((sel.coef != 0).sum()), sel.certificate.certified
(5, True)

(About 840 lines: the regression and classification solvers, the certificate that judges
both and the exact-support λ-choice on top of them share one problem representation.)
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from .losses import check_task

__all__ = [
    "Certificate",
    "ConvexSolution",
    "ConvexSelection",
    "certificate",
    "convex_lambda_max",
    "solve",
    "select",
    "to_model",
]

log = logging.getLogger(__name__)

DEFAULT_CERT_TOL = 1e-6


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Certificate:
    """How far a linear-model solution is from optimal, relative to λ.

    ``max_violation`` is ``max_j v_j / (λ c_j)`` over the penalised weights (see the module
    docstring), ``bias_gradient`` is ``max |∂L/∂b| / λ`` over the intercepts; the solution is
    ``certified`` when both are at most ``tol``.
    """

    max_violation: float
    bias_gradient: float
    tol: float

    @property
    def certified(self) -> bool:
        return max(self.max_violation, self.bias_gradient) <= self.tol

    def as_dict(self) -> dict:
        return {"max_violation": self.max_violation, "bias_gradient": self.bias_gradient,
                "tol": self.tol, "certified": self.certified}


@dataclass
class ConvexSolution:
    """One certified (or not: see ``certificate``) solve at ``lam``.

    ``coef`` has shape ``(p,)`` for regression and ``(C, p)`` for classification; ``intercept``
    is a float or an array of ``C``.
    """

    lam: float
    coef: np.ndarray
    intercept: float | np.ndarray
    certificate: Certificate
    loss: float  # summed fidelity L at the solution

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.coef))


@dataclass
class ConvexSelection:
    """The result of :func:`select`.

    ``interval`` is ``(lo, hi)``: the support has ``nnz`` elements for every λ strictly inside
    it. With ``interval_exact`` (regression) the ends are the knots of the piecewise-linear
    Lasso path; otherwise (classification) they are the innermost certified solves found by
    bisection with ``nnz`` nonzeros (the true ends lie within a factor ``1 + interval_rtol``
    outside them). ``lam`` is their geometric mean. ``history`` holds ``(λ, nnz)`` of every
    certified solve, in order.
    """

    lam: float
    coef: np.ndarray
    intercept: float | np.ndarray
    nnz: int
    k: int
    tol: float
    converged: bool
    interval: tuple[float, float] | None
    interval_exact: bool
    certificate: Certificate
    loss: float
    history: list[tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def solves(self) -> int:
        return len(self.history)

    def as_dict(self) -> dict:
        return {
            "lambda": self.lam, "nnz": self.nnz, "k": self.k, "tol": self.tol,
            "converged": self.converged,
            "interval": list(self.interval) if self.interval is not None else None,
            "interval_exact": self.interval_exact, "certificate": self.certificate.as_dict(),
            "loss": self.loss, "solves": self.solves, "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- input checks


def _as_arrays(X, y, task: str):
    check_task(task)
    X = np.asarray(_numpy(X), dtype=np.float64)
    if X.ndim != 2:
        X = X.reshape(X.shape[0], -1)
    y = np.asarray(_numpy(y))
    if task == "regression":
        y = y.astype(np.float64).reshape(y.shape[0], -1)
        if y.shape[1] != 1:
            raise ValueError(f"The certified convex solver handles one regression output; "
                             f"'y' has {y.shape[1]} columns.")
        y = y[:, 0]
    else:
        y = y.reshape(-1)
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(y == np.round(y)):
                raise ValueError("The 'y' parameter must hold integer class labels for "
                                 "classification.")
            y = y.astype(np.int64)
        if y.min() < 0:
            raise ValueError(f"The class labels in 'y' must be >= 0. Got {int(y.min())}.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"'X' and 'y' must have the same number of samples. Got {X.shape[0]} "
                         f"and {y.shape[0]}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("The 'X' parameter must hold finite numbers only.")
    return X, y


def _numpy(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return a


def _n_classes(y: np.ndarray, n_classes: int | None) -> int:
    C = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if C < 2 or C <= int(y.max()):
        raise ValueError(f"The 'n_classes' parameter must be >= 2 and above every label. "
                         f"Got {n_classes}.")
    return C


def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"The 'lam' parameter must be a finite number > 0. Got {lam}.")
    return lam


def _penalty_weights(weights, shape) -> np.ndarray:
    if weights is None:
        return np.ones(shape)
    c = np.asarray(_numpy(weights), dtype=np.float64)
    if c.shape != tuple(shape):
        raise ValueError(f"The 'weights' parameter must have the shape of the coefficients "
                         f"{tuple(shape)}. Got {c.shape}.")
    if not np.all(np.isfinite(c) & (c > 0)):
        raise ValueError("The 'weights' parameter must hold finite numbers > 0.")
    return c


# --------------------------------------------------------------------------- gradients


def _softmax_grad(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray):
    """Summed cross-entropy, its gradient in W (C × p) and in b (C)."""
    logits = X @ W.T + b
    lse = logsumexp(logits, axis=1)
    loss = float(np.sum(lse - logits[np.arange(len(y)), y]))
    P = np.exp(logits - lse[:, None])
    P[np.arange(len(y)), y] -= 1.0
    return loss, P.T @ X, P.sum(axis=0)


def _gradient(X, y, coef, intercept, task):
    if task == "regression":
        r = y - X @ coef - intercept
        return float(r @ r), -2.0 * (X.T @ r), np.array([-2.0 * r.sum()])
    return _softmax_grad(X, y, coef, np.asarray(intercept))


def _violations(coef: np.ndarray, grad: np.ndarray, lam_c: np.ndarray) -> np.ndarray:
    """The distance of ``−grad`` to ``λc ∂|coef|``, entrywise, in units of ``λc``."""
    nz = coef != 0
    v = np.maximum(np.abs(grad) - lam_c, 0.0)
    v[nz] = np.abs(grad[nz] + lam_c[nz] * np.sign(coef[nz]))
    return v / lam_c


def certificate(X, y, coef, intercept, lam: float, *, task: str, weights=None,
                tol: float = DEFAULT_CERT_TOL) -> Certificate:
    """The optimality certificate of ``(coef, intercept)`` at ``lam`` (module docstring).

    Parameters
    ----------
    X : array of shape (n, p)
    y : array of shape (n,)
        Targets (regression) or integer class labels (classification).
    coef : array of shape (p,) or (C, p)
    intercept : float or array of shape (C,)
    lam : float
        λ on the summed-loss scale.
    task : {"regression", "classification"}
    weights : array of the shape of ``coef``, optional
        Per-weight penalty weights ``c_j > 0`` (the penalty ``λ Σ c_j |w_j|``); 1 if omitted.
    tol : float, default 1e-6
        Relative tolerance that ``certified`` compares against.
    """
    X, y = _as_arrays(X, y, task)
    lam = _check_lam(lam)
    coef = np.asarray(_numpy(coef), dtype=np.float64)
    if task == "regression":
        coef = coef.reshape(-1)
        intercept = float(np.asarray(_numpy(intercept)).reshape(-1)[0])
    else:
        intercept = np.asarray(_numpy(intercept), dtype=np.float64).reshape(-1)
    c = _penalty_weights(weights, coef.shape)
    _, g, gb = _gradient(X, y, coef, intercept, task)
    v = _violations(coef, g, lam * c)
    return Certificate(float(v.max()) if v.size else 0.0, float(np.abs(gb).max()) / lam,
                       float(tol))


def convex_lambda_max(X, y, *, task: str, weights=None, n_classes: int | None = None) -> float:
    """Smallest λ whose solution is all zero: ``max_j |∂L/∂w_j| / c_j`` at ``w = 0``, ``b``
    optimal (the mean of ``y``; the log class frequencies)."""
    X, y = _as_arrays(X, y, task)
    if task == "regression":
        g = -2.0 * (X.T @ (y - y.mean()))
    else:
        C = _n_classes(y, n_classes)
        freq = np.bincount(y, minlength=C) / len(y)
        b = np.log(np.maximum(freq, 1e-300))
        _, g, _ = _softmax_grad(X, y, np.zeros((C, X.shape[1])), b)
    c = _penalty_weights(weights, g.shape)
    return float(np.max(np.abs(g) / c))


# --------------------------------------------------------------------------- regression


class _LassoProblem:
    """The Lasso on centred data, columns divided by their penalty weights (so the penalty is
    plain ℓ1 in ``v = c·w``), with its Gram matrix: everything after the support search is
    O(p²)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, c: np.ndarray):
        self.X, self.y, self.c = X, y, c
        self.xbar, self.ybar = X.mean(axis=0), y.mean()
        self.Z = (X - self.xbar) / c
        self.yc = y - self.ybar
        self.A = self.Z.T @ self.Z
        self.q = self.Z.T @ self.yc
        self.n, self.p = X.shape
        self._cd = None

    def grad(self, v: np.ndarray) -> np.ndarray:
        return -2.0 * (self.q - self.A @ v)

    def support_solve(self, S: np.ndarray, s: np.ndarray, lam: float) -> np.ndarray | None:
        """Stationarity on the support: ``A_SS v_S = q_S − (λ/2) s``."""
        v = np.zeros(self.p)
        if S.size:
            try:
                v[S] = np.linalg.solve(self.A[np.ix_(S, S)], self.q[S] - 0.5 * lam * s)
            except np.linalg.LinAlgError:
                return None
        return v

    def support_solve_qr(self, v: np.ndarray, lam: float) -> np.ndarray | None:
        """The same on the support of ``v`` through a QR factorisation of ``Z_S``: the
        condition number is that of ``Z_S``, not its square (badly scaled, correlated data)."""
        S = np.flatnonzero(v)
        if not S.size:
            return None
        Q, R = np.linalg.qr(self.Z[:, S])
        try:
            t = np.linalg.solve(R.T, 0.5 * lam * np.sign(v[S]))
            out = np.zeros(self.p)
            out[S] = np.linalg.solve(R, Q.T @ self.yc - t)
        except np.linalg.LinAlgError:
            return None
        return out if np.all(np.sign(out[S]) == np.sign(v[S])) else None

    def cd(self, lam: float, v0: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso

        if self._cd is None:
            self._cd = Lasso(alpha=1.0, fit_intercept=False, precompute=self.A, warm_start=True,
                             selection="cyclic")
        est = self._cd
        est.set_params(alpha=lam / (2 * self.n), tol=tol, max_iter=max_iter)
        est.coef_ = v0.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(self.Z, self.yc)
        return est.coef_.copy()

    def refine(self, v: np.ndarray, lam: float, cert_tol: float) -> np.ndarray | None:
        """Active-set corrections from ``v``: exact solve on the support and signs, drop the
        weights whose sign flips, add the zero that violates its condition most."""
        S = np.flatnonzero(v)
        s = np.sign(v[S])
        for _ in range(2 * self.p + 2):
            w = self.support_solve(S, s, lam)
            if w is None:
                return None
            wrong = np.sign(w[S]) != s
            if wrong.any():
                keep = ~wrong
                S, s = S[keep], s[keep]
                continue
            g = self.grad(w)
            excess = np.abs(g) - lam
            excess[S] = -np.inf
            j = int(np.argmax(excess))
            if excess[j] <= cert_tol * lam * 0.1:
                return w
            S = np.append(S, j)
            s = np.append(s, -np.sign(g[j]))
            order = np.argsort(S)
            S, s = S[order], s[order]
        return None

    def to_original(self, v: np.ndarray) -> tuple[np.ndarray, float]:
        w = v / self.c
        return w, float(self.ybar - self.xbar @ w)

    def solve(self, lam: float, v0: np.ndarray | None, cert_tol: float
              ) -> tuple[np.ndarray, ConvexSolution]:
        v0 = np.zeros(self.p) if v0 is None else v0
        tol, max_iter = 1e-10, 100_000
        best = None
        for _ in range(4):
            v = self.cd(lam, v0, tol, max_iter)
            exact = self.refine(v, lam, cert_tol)
            cands = [exact] if exact is not None else []
            cands.append(self.support_solve_qr(exact if exact is not None else v, lam))
            cands.append(v)
            for cand in (c for c in cands if c is not None):
                sol = self._solution(cand, lam, cert_tol)
                if best is None or _worse(best[1].certificate, sol.certificate):
                    best = (cand, sol)
                if sol.certificate.certified:
                    return cand, sol
            v0, tol, max_iter = v, tol * 1e-2, max_iter * 2
        log.warning("convex solve at lambda=%g not certified: violation %.3g > tol %.3g",
                    lam, best[1].certificate.max_violation, cert_tol)
        return best

    def _solution(self, v: np.ndarray, lam: float, cert_tol: float) -> ConvexSolution:
        w, b = self.to_original(v)
        cert = certificate(self.X, self.y, w, b, lam, task="regression", weights=self.c,
                           tol=cert_tol)
        r = self.y - self.X @ w - b
        return ConvexSolution(lam, w, b, cert, float(r @ r))

    def interval(self, v: np.ndarray, lam: float) -> tuple[float, float]:
        """The λ-interval on which the support and signs of the solution at ``lam`` stay
        those of ``v``: the path is ``v_S(λ) = u − λ t`` there, the gradients of the zeros
        ``a + λ b``; every condition is a half-line in λ."""
        S = np.flatnonzero(v)
        s = np.sign(v[S])
        lo, hi = 0.0, math.inf
        if S.size:
            ASS = self.A[np.ix_(S, S)]
            u = np.linalg.solve(ASS, self.q[S])
            t = 0.5 * np.linalg.solve(ASS, s)
        else:
            u = t = np.zeros(0)
        Z = np.setdiff1d(np.arange(self.p), S)
        a = -2.0 * self.q[Z] + 2.0 * self.A[np.ix_(Z, S)] @ u
        bb = -2.0 * self.A[np.ix_(Z, S)] @ t

        def half(coef_lam: np.ndarray, const: np.ndarray):
            # const ≤ λ·coef_lam
            nonlocal lo, hi
            pos, neg = coef_lam > 0, coef_lam < 0
            if pos.any():
                lo = max(lo, float(np.max(const[pos] / coef_lam[pos])))
            if neg.any():
                hi = min(hi, float(np.min(const[neg] / coef_lam[neg])))

        half(1.0 - bb, a)  # a + λb ≤ λ
        half(1.0 + bb, -a)  # −(a + λb) ≤ λ
        half(-s * t, -s * u)  # s(u − λt) ≥ 0  ⇔  −s·u ≤ λ·(−s·t)
        return lo, hi


def _worse(a: Certificate, b: Certificate) -> bool:
    return max(b.max_violation, b.bias_gradient) < max(a.max_violation, a.bias_gradient)


# --------------------------------------------------------------------------- classification


class _LogisticProblem:
    """Multinomial logistic regression with ℓ1 on ``W`` (C × p), split form, L-BFGS-B."""

    def __init__(self, X: np.ndarray, y: np.ndarray, c: np.ndarray, C: int):
        self.X, self.y, self.c, self.C = X, y, c, C
        self.n, self.p = X.shape
        self.xbar = X.mean(axis=0)
        sd = X.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        self.Z = (X - self.xbar) / self.sd
        self.cz = c / self.sd  # penalty weights of V = W·sd
        self.m = C * self.p

    def _unpack(self, x):
        m = self.m
        V = (x[:m] - x[m:2 * m]).reshape(self.C, self.p)
        return V, x[2 * m:]

    def to_original(self, x) -> tuple[np.ndarray, np.ndarray]:
        V, b = self._unpack(x)
        W = V / self.sd
        return W, b - W @ self.xbar

    def from_original(self, W, b) -> np.ndarray:
        V = (W * self.sd).reshape(-1)
        return np.concatenate([np.maximum(V, 0), np.maximum(-V, 0), b + W @ self.xbar])

    def solve(self, lam: float, x0: np.ndarray | None, cert_tol: float
              ) -> tuple[np.ndarray, ConvexSolution]:
        m = self.m
        if x0 is None:
            freq = np.bincount(self.y, minlength=self.C) / self.n
            x0 = np.concatenate([np.zeros(2 * m), np.log(np.maximum(freq, 1e-12))])
        pen = (lam * self.cz).reshape(-1)

        def fun(x):
            V, b = self._unpack(x)
            loss, gV, gb = _softmax_grad(self.Z, self.y, V, b)
            g = gV.reshape(-1)
            obj = loss + pen @ (x[:m] + x[m:2 * m])
            return obj, np.concatenate([g + pen, -g + pen, gb])

        bounds = [(0.0, None)] * (2 * m) + [(None, None)] * self.C
        x = x0
        best = None
        gtol = cert_tol * lam * float(self.cz.min()) * 1e-2
        for attempt in range(4):
            res = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": 20_000, "maxcor": 30, "ftol": 0.0,
                                    "gtol": gtol, "maxfun": 40_000})
            x = res.x
            # both halves positive is never optimal; keep the difference
            d = x[:m] - x[m:2 * m]
            x = np.concatenate([np.maximum(d, 0), np.maximum(-d, 0), x[2 * m:]])
            sol = self._solution(x, lam, cert_tol)
            if not sol.certificate.certified:
                # L-BFGS-B found the support; Newton on it reaches rounding error
                xn = self._newton(x, lam)
                if xn is not None:
                    soln = self._solution(xn, lam, cert_tol)
                    if _worse(sol.certificate, soln.certificate):
                        x, sol = xn, soln
            if best is None or _worse(best[1].certificate, sol.certificate):
                best = (x, sol)
            if sol.certificate.certified:
                return x, sol
            gtol *= 1e-2
        log.warning("convex solve at lambda=%g not certified: violation %.3g > tol %.3g",
                    lam, best[1].certificate.max_violation, cert_tol)
        return best

    def _newton(self, x: np.ndarray, lam: float, max_iter: int = 30) -> np.ndarray | None:
        """Newton's method for the smooth problem on the support and signs of ``x``:
        ``min L(V_S, b) + λ Σ_S c_j s_j V_j``. Returns None if a sign would change."""
        m, C, p = self.m, self.C, self.p
        V, b = self._unpack(x)
        V, b = V.copy(), b.copy()
        S = np.flatnonzero(V.reshape(-1))
        sgn = np.sign(V.reshape(-1)[S])
        pen = (lam * self.cz).reshape(-1)[S] * sgn
        cls, col = np.divmod(S, p)
        used = np.unique(col)
        Zu = np.hstack([self.Z[:, used], np.ones((self.n, 1))])  # active columns + intercept
        pos = np.searchsorted(used, col)
        # parameter θ: the active V entries, then the C intercepts; (class, column in Zu)
        th_cls = np.concatenate([cls, np.arange(C)])
        th_col = np.concatenate([pos, np.full(C, len(used))])

        def objective(V, b):
            loss, gV, gb = _softmax_grad(self.Z, self.y, V, b)
            return loss + pen @ V.reshape(-1)[S], np.concatenate([gV.reshape(-1)[S] + pen, gb])

        f, g = objective(V, b)
        for _ in range(max_iter):
            logits = self.Z @ V.T + b
            P = np.exp(logits - logsumexp(logits, axis=1)[:, None])
            H = np.empty((th_cls.size, th_cls.size))
            for c in range(C):
                for d in range(c, C):
                    w = (P[:, c] * ((c == d) - P[:, d]))
                    M = (Zu * w[:, None]).T @ Zu
                    ic, jd = np.flatnonzero(th_cls == c), np.flatnonzero(th_cls == d)
                    block = M[np.ix_(th_col[ic], th_col[jd])]
                    H[np.ix_(ic, jd)] = block
                    H[np.ix_(jd, ic)] = block.T
            step = np.linalg.lstsq(H, -g, rcond=1e-13)[0]
            t = 1.0
            while t > 1e-10:
                Vn = V.copy().reshape(-1)
                Vn[S] += t * step[:S.size]
                Vn = Vn.reshape(C, p)
                bn = b + t * step[S.size:]
                fn, gn = objective(Vn, bn)
                if fn <= f + 1e-4 * t * (g @ step) or abs(fn - f) <= 1e-15 * abs(f):
                    break
                t /= 2
            else:
                break
            done = np.max(np.abs(gn)) >= np.max(np.abs(g)) * 0.999 and t < 1
            V, b, f, g = Vn, bn, fn, gn
            if done:
                break
            if np.max(np.abs(g[:S.size]) / np.abs(pen), initial=0) < 1e-12 and \
                    np.max(np.abs(g[S.size:]), initial=0) < 1e-12 * lam:
                break
        if np.any(np.sign(V.reshape(-1)[S]) != sgn):
            return None
        Vf = V.reshape(-1)
        return np.concatenate([np.maximum(Vf, 0), np.maximum(-Vf, 0), b])

    def _solution(self, x, lam, cert_tol) -> ConvexSolution:
        W, b = self.to_original(x)
        cert = certificate(self.X, self.y, W, b, lam, task="classification", weights=self.c,
                           tol=cert_tol)
        loss, _, _ = _softmax_grad(self.X, self.y, W, b)
        return ConvexSolution(lam, W, b, cert, loss)


def _problem(X, y, task, weights, n_classes):
    if task == "regression":
        return _LassoProblem(X, y, _penalty_weights(weights, (X.shape[1],)))
    C = _n_classes(y, n_classes)
    return _LogisticProblem(X, y, _penalty_weights(weights, (C, X.shape[1])), C)


def solve(X, y, lam: float, *, task: str, weights=None, n_classes: int | None = None,
          cert_tol: float = DEFAULT_CERT_TOL) -> ConvexSolution:
    """Solve the linear ℓ1 model at ``lam`` until its optimality is certified.

    Minimises ``L(W, b) + λ Σ_j c_j |W_j|`` (summed fidelity, docs/design.md §1) in float64.

    Parameters
    ----------
    X : array or tensor of shape (n, p)
    y : array or tensor of shape (n,)
    lam : float
        λ > 0 on the summed-loss scale.
    task : {"regression", "classification"}
    weights : array of the coefficients' shape, optional
        Penalty weights ``c_j > 0``; 1 if omitted.
    n_classes : int, optional
        Classification: the number of classes C (default: the largest label + 1).
    cert_tol : float, default 1e-6
        The certificate's tolerance, relative to λ (see :class:`Certificate`).

    Returns
    -------
    ConvexSolution
        Its ``certificate`` says whether the tolerance was reached (a warning is logged if not).
    """
    X, y = _as_arrays(X, y, task)
    lam = _check_lam(lam)
    return _problem(X, y, task, weights, n_classes).solve(lam, None, cert_tol)[1]


# --------------------------------------------------------------------------- selection


def select(X, y, k: int, *, task: str, tol: float = 0, weights=None,
           n_classes: int | None = None, cert_tol: float = DEFAULT_CERT_TOL,
           max_solves: int = 100, interval_rtol: float = 1e-3) -> ConvexSelection:
    """Choose λ so that the certified solution has ``k`` nonzero weights.

    The paper's λ-choice on certified solves (docs/design.md §5): from λ_max, too sparse → λ to the
    k-th largest ``γ_j = |∂L/∂w_j| / c_j`` strictly below the current λ; too dense → raise λ;
    a bracket ``[λ_dense, λ_sparse]`` of the tightest known values is bisected geometrically
    whenever a proposal falls outside it. Once the count is within ``tol``, λ is moved to the
    geometric middle of the interval on which the support keeps that count (exactly from the
    piecewise-linear path for regression, by bisection between certified solves for
    classification), and the solution there is returned.

    Parameters
    ----------
    X, y, task, weights, n_classes, cert_tol
        As in :func:`solve`.
    k : int
        Target number of nonzero weights, ``1 ≤ k ≤`` number of weights.
    tol : float, default 0
        Accepted distance in weights: 0 means exactly ``k``.
    max_solves : int, default 100
        Budget of certified solves for the λ search.
    interval_rtol : float, default 1e-3
        Classification: relative precision of the interval ends.

    Returns
    -------
    ConvexSelection
        ``converged`` is False when no λ within the budget gave a count within ``tol`` (for
        instance when no λ has exactly ``k`` nonzeros); the result then holds the closest
        certified solution.

    Raises
    ------
    ValueError
        For a ``k`` outside ``[1, number of weights]`` or a negative ``tol``.
    """
    t0 = time.perf_counter()
    X, y = _as_arrays(X, y, task)
    prob = _problem(X, y, task, weights, n_classes)
    total = prob.p if task == "regression" else prob.m
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= total:
        raise ValueError(f"The 'k' parameter must be an integer in [1, {total}]. Got {k!r}.")
    k = int(k)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"The 'tol' parameter must be a finite number >= 0. Got {tol!r}.")
    c = prob.c
    lam_max = convex_lambda_max(X, y, task=task, weights=c,
                                n_classes=None if task == "regression" else prob.C)
    if not lam_max > 0:
        raise ValueError("Every weight has zero gradient at w = 0 (constant features or "
                         "labels): no λ gives a nonzero weight.")

    history: list[tuple[float, int]] = []
    solved: dict[float, tuple[np.ndarray, ConvexSolution]] = {}

    def run(lam: float) -> tuple[np.ndarray, ConvexSolution]:
        if lam in solved:
            return solved[lam]
        # warm start from the certified solution nearest in log λ
        start = None
        if solved:
            near = min(solved, key=lambda l: abs(math.log(l / lam)))
            start = solved[near][0]
        state, sol = prob.solve(lam, start, cert_tol)
        solved[lam] = (state, sol)
        history.append((lam, sol.nnz))
        return state, sol

    def gamma_zeros(sol: ConvexSolution) -> np.ndarray:
        """``γ_j = |∂L/∂w_j| / c_j`` of the zero weights, sorted decreasing."""
        _, g, _ = _gradient(X, y, sol.coef, sol.intercept, task)
        return np.sort((np.abs(g) / c)[sol.coef == 0])[::-1]

    def ok(n: int) -> bool:
        return abs(n - k) <= tol + 1e-9

    dense = None  # largest λ known to give too many nonzeros
    sparse = lam_max  # smallest λ known to give too few (λ_max: none)
    zero_sol = ConvexSolution(lam_max, np.zeros(c.shape),
                              0.0, Certificate(0.0, 0.0, cert_tol), 0.0)
    if task == "regression":
        zero_sol.intercept = float(y.mean())
    else:
        freq = np.bincount(y, minlength=prob.C) / len(y)
        zero_sol.intercept = np.log(np.maximum(freq, 1e-300))
    current = zero_sol
    lam = lam_max
    found = None
    stalled = False  # the last γ-step left the count unchanged: bisect once (no Zeno steps)
    while len(history) < max_solves:
        n_now = current.nnz
        if n_now < k - tol - 1e-9 and not stalled:  # too sparse: k-th largest γ below λ
            # the nonzeros sit at γ = λ: the (k − nnz)-th largest γ of the zeros below λ
            g = gamma_zeros(current)
            below = g[g < lam * (1 - 1e-12)]
            proposal = below[min(k - n_now, below.size) - 1] if below.size else 0.0
        else:  # too dense: bisect the bracket
            proposal = 0.0
        lo_b = dense if dense is not None else 0.0
        if not (lo_b < proposal < sparse) or proposal <= 0:
            proposal = math.sqrt(dense * sparse) if dense is not None else sparse / 2
        if dense is not None and sparse / dense < 1 + 1e-10:
            break  # the bracket has collapsed: no λ with a count within tol
        lam = float(proposal)
        before = current.nnz
        _, current = run(lam)
        stalled = current.nnz == before and not stalled
        if ok(current.nnz):
            found = current
            break
        if current.nnz > k:
            dense = lam if dense is None else max(dense, lam)
        else:
            sparse = min(sparse, lam)
    if found is None:
        lam_best, _ = min(history, key=lambda h: (abs(h[1] - k), -h[0])) if history else (
            lam_max, 0)
        sol = solved[lam_best][1] if history else zero_sol
        return ConvexSelection(sol.lam, sol.coef, sol.intercept, sol.nnz, k, tol, False, None,
                               False, sol.certificate, sol.loss, history,
                               time.perf_counter() - t0)

    count = found.nnz
    if task == "regression":
        state = solved[found.lam][0]
        lo, hi = prob.interval(state, found.lam)
        exact = True
    else:
        lo, hi = _bisect_interval(run, found.lam, count, history, interval_rtol)
        exact = False
    if lo > 0 and math.isfinite(hi):
        mid = math.sqrt(lo * hi)
    elif math.isfinite(hi):
        mid = hi / 2  # the interval reaches λ → 0
    else:
        mid = 2 * lo
    state, sol = run(mid)
    if sol.nnz != count:  # not an interval after all (classification): keep the found one
        log.warning("the support at the middle of [%g, %g] has %d nonzeros, not %d; keeping "
                    "lambda=%g", lo, hi, sol.nnz, count, found.lam)
        sol = found
    return ConvexSelection(sol.lam, sol.coef, sol.intercept, sol.nnz, k, tol, ok(sol.nnz),
                           (lo, hi), exact, sol.certificate, sol.loss, history,
                           time.perf_counter() - t0)


def _bisect_interval(run, lam: float, count: int, history, rtol: float) -> tuple[float, float]:
    """Ends of the λ-interval around ``lam`` on which the certified count is ``count``, by
    geometric bisection between the nearest solves with another count."""
    others = [(l, n) for l, n in history if n != count]
    below = [l for l, n in others if l < lam]
    above = [l for l, n in others if l > lam]
    same = [l for l, n in history if n == count]

    def end(inside: float, outside: float | None, direction: float) -> float:
        if outside is None:  # find a λ with another count first
            outside = inside
            for _ in range(60):
                outside = outside * (2.0 ** direction)
                if run(outside)[1].nnz != count:
                    break
                inside = outside
            else:
                return 0.0 if direction < 0 else math.inf
        while max(inside, outside) / min(inside, outside) > 1 + rtol:
            mid = math.sqrt(inside * outside)
            if run(mid)[1].nnz == count:
                inside = mid
            else:
                outside = mid
        return inside

    lo_out = max(below) if below else None
    hi_out = min(above) if above else None
    lo_in = min([l for l in same if lo_out is None or l > lo_out] + [lam])
    hi_in = max([l for l in same if hi_out is None or l < hi_out] + [lam])
    return end(lo_in, lo_out, -1.0), end(hi_in, hi_out, 1.0)


# --------------------------------------------------------------------------- into a model


def to_model(solution: ConvexSolution | ConvexSelection, model) -> None:
    """Copy a solution into the single linear layer of ``model`` (e.g. ``mlp(p, [], out)``).

    Regression writes ``coef`` as the 1 × p weight; classification the C × p matrix. The
    model keeps its dtype (a float32 model rounds the float64 solution; the zeros stay exact).
    """
    import torch

    from .penalty import penalised_layers

    layers = penalised_layers(model)
    if len(layers) != 1:
        raise ValueError(f"to_model needs a linear model (one penalised layer); this model has "
                         f"{len(layers)}.")
    layer = layers[0][1]
    W = np.asarray(solution.coef, dtype=np.float64).reshape(layer.weight.shape)
    b = np.asarray(solution.intercept, dtype=np.float64).reshape(-1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(b).reshape(layer.bias.shape))
