"""Soft-thresholding and proximal optimizers.

Both optimizers minimise ``f(Θ) + Σ_g l1_g ‖Θ_g‖₁`` where ``f`` is whatever loss the caller
back-propagates and ``l1_g`` is the ``"l1"`` hyperparameter of parameter group ``g``. With the
mean loss (``reduction="mean"``), ``l1_g`` is λ_k / N (``lambda_per_sample``), with the summed
loss it is λ_k itself. Groups with ``l1 = 0`` (biases) take the plain step.

Each optimizer is PyTorch's own (``torch.optim.SGD`` / ``torch.optim.Adam``, fused kernels where
available) followed by the proximal map of the ℓ1 term in the same metric; that map sits in the
functional kernels :func:`prox_l1_` and :func:`prox_l1_diagonal_`, which can be tested alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import SGD, Adam
from torch.optim.sgd import sgd as sgd_update

from .penalty import L1_WEIGHT
from .sharded import is_dtensor, local

__all__ = ["soft_threshold", "soft_threshold_", "prox_l1_", "prox_l1_diagonal_",
           "prox_l1_weighted_", "sgd_threshold",
           "ProxSGD", "ProxAdam"]


def soft_threshold(z: Tensor, tau: float | Tensor) -> Tensor:
    """Entrywise soft-thresholding ``S_τ(z) = sign(z)·max(|z| − τ, 0)``.

    Exactly zero wherever ``|z| ≤ τ``. ``τ`` is a number or a tensor of thresholds.

    >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5]), 0.5)
    tensor([-1.5000, -0.0000,  0.0000,  0.0000,  1.0000])
    """
    if isinstance(tau, Tensor):
        return z - torch.clamp(z, min=-tau, max=tau)  # z − z = 0 exactly where |z| ≤ τ
    if tau < 0:
        raise ValueError(f"The threshold 'tau' must be >= 0. Got {tau}.")
    return F.softshrink(z, float(tau))


def soft_threshold_(z: Tensor, tau: float | Tensor) -> Tensor:
    """In-place :func:`soft_threshold`."""
    if is_dtensor(z):  # a sharded parameter (FSDP2): elementwise on its local shard
        soft_threshold_(z.to_local(), local(tau) if isinstance(tau, Tensor) else tau)
        return z
    if isinstance(tau, Tensor):
        return z.copy_(soft_threshold(z, tau))
    if tau < 0:
        raise ValueError(f"The threshold 'tau' must be >= 0. Got {tau}.")
    # softshrink's out= variant writing over its input: one pass, no temporary
    return torch.ops.aten.softshrink.out(z, float(tau), out=z)


@torch.no_grad()
def prox_l1_(params: list[Tensor], tau: float) -> None:
    """``p ← S_τ(p)`` for every tensor: the prox of ``τ‖·‖₁`` (Euclidean metric)."""
    for p in params:
        soft_threshold_(p, tau)


@torch.no_grad()
def prox_l1_diagonal_(params: list[Tensor], denoms: list[Tensor], c: float) -> None:
    """The prox of ``c‖·‖₁`` in the metric ``diag(d)``: threshold ``c / d`` per entry.

    Computed as ``S_c(p·d) / d``, which is exactly zero wherever ``|p|·d ≤ c`` and equals
    ``p − (c/d)·sign(p)`` elsewhere, with one soft-thresholding kernel per tensor.
    """
    if not params:
        return
    params, denoms = [local(p) for p in params], [local(d) for d in denoms]  # shards
    torch._foreach_mul_(params, denoms)  # in place, no temporaries: u = p·d ...
    for p in params:
        soft_threshold_(p, c)  # ... S_c(u) ...
    torch._foreach_div_(params, denoms)  # ... / d (0 / d = 0: the zeros stay exact)


@torch.no_grad()
def prox_l1_weighted_(params: list[Tensor], weights: list[Tensor], tau: float) -> None:
    """``p ← S_{τ·c}(p)`` entrywise, the prox of ``τ Σ_i c_i |p_i|`` (``c > 0``).

    Computed in place as ``c · S_τ(p / c)``: no temporaries, and exactly zero wherever
    ``|p| ≤ τ·c`` (``0 · c = 0``).
    """
    if not params:
        return
    params, weights = [local(p) for p in params], [local(c) for c in weights]  # shards
    torch._foreach_div_(params, weights)
    for p in params:
        soft_threshold_(p, tau)
    torch._foreach_mul_(params, weights)


def _prox_sgd_kernel(groups: list[tuple]) -> None:
    """A whole :class:`ProxSGD` step: the unit that ``torch.compile`` fuses into one pass per
    tensor (read p, g, v; write p, v), the memory traffic of PyTorch's fused SGD kernel.

    ``groups`` holds, per parameter group, ``(params, grads, bufs, s, nesterov, maximize)``
    with ``bufs`` the momentum buffers (``None`` without momentum) and ``s`` the 1-D tensor
    ``[lr, momentum, 1 − dampening, weight_decay, τ]``, τ from :func:`sgd_threshold` (a
    tensor, so that a changing learning rate does not recompile).
    """
    for params, grads, bufs, s, nesterov, maximize in groups:
        lr, momentum, undamped, weight_decay, tau = s[0], s[1], s[2], s[3], s[4]
        for p, g, buf in zip(params, grads, bufs):
            d = (-g if maximize else g) + weight_decay * p
            if buf is not None:
                v = buf * momentum + undamped * d
                buf.copy_(v)
                d = d + momentum * v if nesterov else v
            u = p - lr * d
            p.copy_(u - torch.clamp(u, -tau, tau))  # u − u = 0 exactly where |u| ≤ τ


def _prox_adam_kernel(groups: list[tuple]) -> None:
    """A whole :class:`ProxAdam` step (Adam's moments, its step, and the prox in its metric),
    the unit that ``torch.compile`` fuses into one pass per tensor.

    ``groups`` holds ``(params, grads, exp_avgs, exp_avg_sqs, s, maximize)`` for each set of
    parameters of one group at one step count, with ``s`` the tensor ``[lr / (1 − β₁ᵗ), β₁,
    1 − β₁, β₂, 1 − β₂, ε, weight_decay, lr·l1, √(1 − β₂ᵗ)]`` (computed in Python: inside the
    kernel the bias corrections would be recomputed for every vector of entries, and 1 − β₂
    would lose its digits in a low-precision dtype).
    """
    for params, grads, exp_avgs, exp_avg_sqs, s, maximize in groups:
        step_size, beta1, one_m_beta1, beta2, one_m_beta2, eps, weight_decay, tau, bias2_sqrt = (
            s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8])
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            g = (-g if maximize else g) + weight_decay * p
            m_new = beta1 * m + one_m_beta1 * g
            v_new = beta2 * v + one_m_beta2 * g * g
            m.copy_(m_new)
            v.copy_(v_new)
            d = v_new.sqrt() / bias2_sqrt + eps
            w = (p - step_size * m_new / d) * d  # the prox of c‖·‖₁ in the metric diag(d):
            p.copy_((w - torch.clamp(w, -tau, tau)) / d)  # S_c(u·d) / d


_COMPILED: dict = {}


def _compiled(kernel):
    """``torch.compile(kernel)``, built once per process."""
    if kernel not in _COMPILED:
        _COMPILED[kernel] = torch.compile(kernel, dynamic=True)
    return _COMPILED[kernel]


def _scalar_dtype() -> torch.dtype:
    """The dtype of torch's Adam step counter: float64 under a float64 default, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check(value: float, name: str, low: float = 0.0, high: float | None = None) -> float:
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"The '{name}' parameter must be {bound}. Got {value}.")
    return value


def _fused_default(params) -> bool | None:
    """PyTorch's fused kernels, where every parameter is a floating CPU or CUDA tensor."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])] \
        if isinstance(params, list) else None
    if not tensors:
        return None
    ok = all(isinstance(p, Tensor) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
             and not is_dtensor(p)  # torch has no fused kernel for sharded (DTensor) ones
             for p in tensors)
    return True if ok else None


class _L1Groups:
    """Mixin: an ``l1`` hyperparameter in every parameter group, validated, default 0."""

    def _init_l1(self, l1: float) -> None:
        self.defaults["l1"] = _check(l1, "l1")
        for group in self.param_groups:
            group["l1"] = _check(group.get("l1", l1), "l1")

    def _weighted(self) -> bool:
        """Whether some parameter carries per-weight penalty weights ``c_i`` (the weighted
        penalty takes the eager path: the compiled kernels have one threshold per group)."""
        return any(L1_WEIGHT in st for st in self.state.values())  # type: ignore[attr-defined]

    def _compiled_step(self, kernel, closure):
        """The step of ``compile=True``: ``kernel`` compiled, on :meth:`_kernel_groups`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        _compiled(kernel)(self._kernel_groups())  # type: ignore[attr-defined]
        return loss

    def _scalars_of(self, index, values: tuple, like: Tensor) -> Tensor:
        """A group's scalars as one tensor for a compiled kernel, rebuilt only when they change
        (a tensor, not Python floats: a new learning rate must not recompile)."""
        # at least float32: in bfloat16, β₂ = 0.999 would round to 1, and small thresholds to 0
        dtype = torch.promote_types(like.dtype, torch.float32)
        cache = self.__dict__.setdefault("_scalar_cache", {})
        hit = cache.get(index)
        if (hit is None or hit[0] != values or hit[1].device != like.device
                or hit[1].dtype != dtype):
            cache[index] = hit = (values, torch.tensor(values, dtype=dtype, device=like.device))
        return hit[1]

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)  # type: ignore[misc]
        group = self.param_groups[-1]  # type: ignore[attr-defined]
        group["l1"] = _check(group.get("l1", self.defaults.get("l1", 0.0)), "l1")  # type: ignore

    def __getstate__(self):
        state = super().__getstate__()  # type: ignore[misc]
        state["compile"] = getattr(self, "compile", False)  # torch keeps only its own fields
        return state

    def __setstate__(self, state):
        super().__setstate__(state)  # type: ignore[misc]
        self.__dict__.setdefault("compile", False)
        for group in self.param_groups:  # type: ignore[attr-defined]
            group.setdefault("l1", 0.0)


def _bias2_sqrt(step, beta2: float):
    """``√(1 − β₂ᵗ)``, Adam's second-moment bias correction, where the step counter lives: a
    tensor step (on the device under the fused kernel) stays a tensor, so reading it is no
    host synchronisation."""
    if isinstance(step, Tensor):
        return (1 - beta2 ** step.to(torch.float64 if step.device.type == "cpu"
                                     else torch.float32)).sqrt()
    return math.sqrt(1 - beta2 ** float(step))


class ThresholdBatch:
    """Soft-thresholds gathered by threshold, then applied with one call per threshold
    (:func:`prox_l1_`, or :func:`prox_l1_weighted_` where penalty weights ``c`` are set)."""

    def __init__(self) -> None:
        self.plain: dict[float, list[Tensor]] = {}
        self.weighted: dict[float, tuple[list[Tensor], list[Tensor]]] = {}

    def add(self, p: Tensor, tau: float, c: Tensor | None = None) -> None:
        if c is None:
            self.plain.setdefault(tau, []).append(p)
        else:
            ps, cs = self.weighted.setdefault(tau, ([], []))
            ps.append(p)
            cs.append(c)

    def apply(self) -> None:
        for tau, ps in self.plain.items():
            prox_l1_(ps, tau)
        for tau, (ps, cs) in self.weighted.items():
            prox_l1_weighted_(ps, cs, tau)


def sgd_threshold(group: dict, l1: float | None = None) -> float:
    """The soft-threshold of one :class:`ProxSGD` step for a parameter group:
    ``lr · l1 · (1 − dampening) / (1 − momentum)`` (``l1`` the group's unless given)."""
    momentum = group["momentum"]
    scale = (1 - group["dampening"]) / (1 - momentum) if momentum > 0 else 1.0
    return float(group["lr"]) * (group["l1"] if l1 is None else l1) * scale


class ProxSGD(_L1Groups, SGD):
    r"""Proximal stochastic gradient descent with optional momentum.

    .. math::

        v &\leftarrow \mu v + (1 - \delta) g \\
        \Theta &\leftarrow S_{\tau}(\Theta - \alpha v), \qquad
        \tau = \alpha\,\ell_1 \frac{1 - \delta}{1 - \mu}

    with ``S_τ`` the soft-thresholding operator, ``α = lr``, ``μ`` the momentum, ``δ`` the
    dampening and ``ℓ1`` the group's ``l1``: the step of ``torch.optim.SGD`` followed by
    :func:`prox_l1_`. Without momentum and with the full-batch gradient this is the paper's
    proximal gradient algorithm (Algorithm 3). Zeros are exact.

    The factor ``(1 − δ)/(1 − μ)`` keeps the fixed points those of the ℓ1 problem: momentum
    settles at ``v = (1 − δ) g / (1 − μ)``, a gradient step ``(1 − δ)/(1 − μ)`` times longer,
    and the threshold must grow with it. With ``τ = α ℓ1`` alone, momentum 0.9 would solve the
    problem at a tenth of the stated λ (and the first-order conditions at λ would fail).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; each group may set its own ``lr``, ``l1``, ``momentum``.
    lr : float, default 1e-2
    l1 : float, default 0.0
        Coefficient of ``‖·‖₁`` on the scale of the loss being back-propagated.
    momentum : float, default 0.0
    nesterov : bool, default False
    fused : bool, optional
        PyTorch's fused SGD kernel; by default used when every parameter allows it.
    compile : bool, default False
        Take the whole step (momentum, gradient step and soft-thresholding) in one pass per
        tensor, compiled with ``torch.compile`` (needs a C++ compiler; the first step compiles
        for a few seconds). The state (``momentum_buffer``) is the same as without it, so a
        checkpoint can be resumed either way. Each call costs a fixed overhead of some tens of
        microseconds on top of one pass over the tensors: it pays on large networks
        (``benchmarks/STEP_RESULTS.md``).

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> from l1sparse.penalty import param_groups
    >>> net = mlp(4, [8], 1, seed=0)
    >>> opt = ProxSGD(param_groups(net, {"fc1": 0.1, "fc2": 0.0}), lr=0.05)
    >>> loss = net(torch.randn(16, 4)).pow(2).mean()
    >>> loss.backward(); opt.step()
    """

    def __init__(self, params, lr: float = 1e-2, *, l1: float = 0.0, momentum: float = 0.0,
                 nesterov: bool = False, fused: bool | None = None,
                 compile: bool = False) -> None:  # noqa: A002
        params = list(params)
        _check(lr, "lr"), _check(momentum, "momentum", 0, 1)
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov,
                         fused=(_fused_default(params) if fused is None else fused)
                         and not compile)
        self._init_l1(l1)
        self.compile = bool(compile)
        for group in self.param_groups:
            _check(group["lr"], "lr")

    @torch.no_grad()
    def step(self, closure=None):
        if self.compile and not self._weighted():
            return self._compiled_step(_prox_sgd_kernel, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sgd_update()
        # one call per threshold, not per group: a global target gives every group the same
        batch = ThresholdBatch()
        for group in self.param_groups:
            if group["l1"] <= 0:
                continue
            tau = sgd_threshold(group)
            for p in group["params"]:
                if p.grad is not None:
                    batch.add(p, tau, self.state[p].get(L1_WEIGHT) if p in self.state else None)
        batch.apply()
        return loss

    def _sgd_update(self) -> None:
        """torch's SGD update (``torch.optim.sgd.sgd``), one call for all the groups that share
        their SGD settings — ours differ only in ``l1`` — instead of one call per group, whose fixed
        cost adds up (``benchmarks/STEP_RESULTS.md``)."""
        merged: dict[tuple, tuple[list, list, list]] = {}
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            bufs = [self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None
                    for p in params]
            key = (group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                   group["nesterov"], group["maximize"], group["foreach"], group["fused"],
                   any(p.grad.is_sparse for p in params),
                   all(b is None for b in bufs))  # torch starts buffers per call
            entry = merged.setdefault(key, ([], [], []))
            entry[0].extend(params)
            entry[1].extend(p.grad for p in params)
            entry[2].extend(bufs)
        for key, (params, grads, bufs) in merged.items():
            lr, momentum, dampening, weight_decay, nesterov, maximize, foreach, fused = key[:8]
            sparse = key[8]
            sgd_update(params, grads, bufs, weight_decay=weight_decay, momentum=momentum, lr=lr,
                       dampening=dampening, nesterov=nesterov, maximize=maximize,
                       has_sparse_grad=sparse, foreach=foreach, fused=fused,
                       grad_scale=getattr(self, "grad_scale", None),
                       found_inf=getattr(self, "found_inf", None))
            if momentum != 0:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf

    def _kernel_groups(self) -> list[tuple]:
        """The arguments of :func:`_prox_sgd_kernel`; momentum buffers made where missing."""
        out = []
        for i, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            momentum, dampening = group["momentum"], group["dampening"]
            scalars = self._scalars_of(i, (group["lr"], momentum, 1 - dampening,
                                           group["weight_decay"], sgd_threshold(group)),
                                       params[0])
            bufs = []
            for p in params:
                if momentum == 0:
                    bufs.append(None)
                    continue
                state = self.state[p]
                if state.get("momentum_buffer") is None:
                    # torch starts the buffer at the first (decayed) gradient, undamped; a
                    # buffer b₀ with momentum·b₀ + (1 − dampening)·d = d gives the same
                    d = (-p.grad if group["maximize"] else p.grad) + group["weight_decay"] * p
                    state["momentum_buffer"] = d.mul_(dampening / momentum)
                bufs.append(state["momentum_buffer"])
            out.append((params, [p.grad for p in params], bufs, scalars,
                        bool(group["nesterov"]), bool(group["maximize"])))
        return out


class ProxAdam(_L1Groups, Adam):
    r"""Adam with the ℓ1 proximal step taken in Adam's diagonal metric.

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        d &= \sqrt{\hat v} + \epsilon \\
        \Theta &\leftarrow S_{\alpha \ell_1 / d}\big(\Theta - \alpha \hat m / d\big)

    the step of ``torch.optim.Adam`` followed by :func:`prox_l1_diagonal_` with Adam's own
    denominator ``d``. The threshold is per entry; a zero weight re-enters only where
    ``|m̂| > ℓ1``, the stochastic form of the first-order condition. Zeros are exact.

    Parameters
    ----------
    params : iterable
    lr : float, default 1e-3
    l1 : float, default 0.0
        As in :class:`ProxSGD`.
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    fused : bool, optional
        PyTorch's fused Adam kernel; by default used when every parameter allows it.
    compile : bool, default False
        Take the whole step (moments, Adam step, prox) in one pass per tensor, compiled with
        ``torch.compile`` (needs a C++ compiler; the first step compiles for a few seconds, up to
        about a minute on a cold cache). The state is torch's Adam state, so a checkpoint can be
        resumed either way. Timings in ``benchmarks/STEP_RESULTS.md``.
    """

    def __init__(self, params, lr: float = 1e-3, *, l1: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None, compile: bool = False) -> None:  # noqa: A002
        params = list(params)
        _check(lr, "lr"), _check(eps, "eps")
        _check(betas[0], "betas[0]", 0, 1), _check(betas[1], "betas[1]", 0, 1)
        super().__init__(params, lr=lr, betas=betas, eps=eps,
                         fused=(_fused_default(params) if fused is None else fused)
                         and not compile)
        self._init_l1(l1)
        self.compile = bool(compile)
        for group in self.param_groups:
            _check(group["lr"], "lr")

    @torch.no_grad()
    def step(self, closure=None):
        if self.compile and not self._weighted():
            return self._compiled_step(_prox_adam_kernel, closure)
        # torch's Adam starts a parameter's state when it is empty: penalty weights set before
        # the first step must not hide that
        pending = {p: st.pop(L1_WEIGHT) for p, st in self.state.items()
                   if L1_WEIGHT in st and "step" not in st}
        loss = super().step(closure)
        for p, c in pending.items():
            self.state[p][L1_WEIGHT] = c
        for group in self.param_groups:
            if group["l1"] <= 0:
                continue
            beta2 = group["betas"][1]
            params, denoms = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                d = state["exp_avg_sq"].sqrt().div_(_bias2_sqrt(state["step"], beta2))
                d.add_(group["eps"])
                c = state.get(L1_WEIGHT)
                if c is not None:
                    # weighted: the prox of lr·l1·c_i|·| in the metric diag(d) is
                    # S_{lr·l1}(p·d/c)·c/d, exactly zero where |p|·d ≤ lr·l1·c_i
                    d = d / c
                params.append(p)
                denoms.append(d)
            prox_l1_diagonal_(params, denoms, group["lr"] * group["l1"])
        return loss

    def _kernel_groups(self) -> list[tuple]:
        """The arguments of :func:`_prox_adam_kernel`; the state made as torch's Adam makes it,
        so that checkpoints resume either way."""
        for group in self.param_groups:  # before any state changes
            for option in ("amsgrad", "decoupled_weight_decay", "capturable", "differentiable"):
                if group.get(option):
                    raise ValueError(f"ProxAdam(compile=True) does not implement {option!r}.")
        out = []
        for i, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:  # as torch's Adam makes it
                    state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            steps = [self.state[p]["step"] for p in params]
            torch._foreach_add_(steps, 1.0)
            beta1, beta2 = group["betas"]
            by_step: dict[float, list[Tensor]] = {}  # one set, unless some grads were None
            for p, t in zip(params, steps):
                by_step.setdefault(float(t), []).append(p)
            for k, (t, ps) in enumerate(by_step.items()):
                scalars = self._scalars_of(
                    (i, k), (group["lr"] / (1 - beta1 ** t), beta1, 1 - beta1, beta2, 1 - beta2,
                             group["eps"], group["weight_decay"], group["lr"] * group["l1"],
                             math.sqrt(1 - beta2 ** t)), ps[0])
                states = [self.state[p] for p in ps]
                out.append((ps, [p.grad for p in ps], [s["exp_avg"] for s in states],
                            [s["exp_avg_sq"] for s in states], scalars,
                            bool(group["maximize"])))
        return out
