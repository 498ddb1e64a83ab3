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

__all__ = ["soft_threshold", "soft_threshold_", "prox_l1_", "prox_l1_diagonal_", "ProxSGD",
           "ProxAdam"]


def soft_threshold(z: Tensor, tau: float | Tensor) -> Tensor:
    """Entrywise soft-thresholding ``S_τ(z) = sign(z)·max(|z| − τ, 0)``.

    Exactly zero wherever ``|z| ≤ τ``. ``τ`` is a number or a tensor of thresholds.

    >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5]), 0.5)
    tensor([-1.5000,  0.0000,  0.0000,  0.0000,  1.0000])
    """
    if isinstance(tau, Tensor):
        return z - torch.clamp(z, min=-tau, max=tau)  # z − z = 0 exactly where |z| ≤ τ
    if tau < 0:
        raise ValueError(f"The threshold 'tau' must be >= 0. Got {tau}.")
    return F.softshrink(z, float(tau))


def soft_threshold_(z: Tensor, tau: float | Tensor) -> Tensor:
    """In-place :func:`soft_threshold`."""
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
    for p, d in zip(params, denoms):
        p.copy_(F.softshrink(p * d, c).div_(d))


def _prox_diagonal_kernel(p: Tensor, exp_avg_sq: Tensor, bias2_sqrt: Tensor, eps: Tensor,
                          c: Tensor) -> None:
    """One tensor of :func:`prox_l1_diagonal_` with Adam's denominator built inside: the unit
    that ``torch.compile`` fuses into a single pass (scalars as 0-d tensors: no recompiles when
    the learning rate or the step count change)."""
    d = exp_avg_sq.sqrt() / bias2_sqrt + eps
    u = p * d
    p.copy_((u - torch.clamp(u, -c, c)) / d)  # u − u = 0 exactly where |u| ≤ c


def _prox_sgd_kernel(groups: list[tuple]) -> None:
    """A whole :class:`ProxSGD` step: the unit that ``torch.compile`` fuses into one pass per
    tensor (read p, g, v; write p, v), as cheap as PyTorch's fused SGD kernel.

    ``groups`` holds, per parameter group, ``(params, grads, bufs, s, nesterov, maximize)``
    with ``bufs`` the momentum buffers (``None`` without momentum) and ``s`` a 1-D tensor
    ``[lr, momentum, dampening, weight_decay, lr·l1]`` (a tensor, so that a changing learning
    rate does not recompile).
    """
    for params, grads, bufs, s, nesterov, maximize in groups:
        lr, momentum, dampening, weight_decay, tau = s[0], s[1], s[2], s[3], s[4]
        for p, g, buf in zip(params, grads, bufs):
            d = (-g if maximize else g) + weight_decay * p
            if buf is not None:
                v = buf * momentum + (1 - dampening) * d
                buf.copy_(v)
                d = d + momentum * v if nesterov else v
            u = p - lr * d
            p.copy_(u - torch.clamp(u, -tau, tau))  # u − u = 0 exactly where |u| ≤ τ


_COMPILED: dict = {}


def _compiled(kernel):
    """``torch.compile(kernel)``, built once per process."""
    if kernel not in _COMPILED:
        _COMPILED[kernel] = torch.compile(kernel, dynamic=True)
    return _COMPILED[kernel]


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
             for p in tensors)
    return True if ok else None


class _L1Groups:
    """Mixin: an ``l1`` hyperparameter in every parameter group, validated, default 0."""

    def _init_l1(self, l1: float) -> None:
        self.defaults["l1"] = _check(l1, "l1")
        for group in self.param_groups:
            group["l1"] = _check(group.get("l1", l1), "l1")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)  # type: ignore[misc]
        group = self.param_groups[-1]  # type: ignore[attr-defined]
        group["l1"] = _check(group.get("l1", self.defaults.get("l1", 0.0)), "l1")  # type: ignore

    def __setstate__(self, state):
        super().__setstate__(state)  # type: ignore[misc]
        self.__dict__.setdefault("compile", False)
        for group in self.param_groups:  # type: ignore[attr-defined]
            group.setdefault("l1", 0.0)


class ProxSGD(_L1Groups, SGD):
    r"""Proximal stochastic gradient descent with optional momentum.

    .. math::

        v &\leftarrow \mu v + g \\
        \Theta &\leftarrow S_{\alpha\,\ell_1}(\Theta - \alpha v)

    with ``S_τ`` the soft-thresholding operator, ``α = lr`` and ``ℓ1`` the group's ``l1``: the
    step of ``torch.optim.SGD`` followed by :func:`prox_l1_`. Without momentum and with the
    full-batch gradient this is the paper's proximal gradient algorithm (Algorithm 3). Zeros
    are exact.

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
        checkpoint can be resumed either way. On LeNet-300-100 it made the proximal step as
        cheap as torch's plain SGD step (``benchmarks/step_bench.py``).

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
        if self.compile:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            _compiled(_prox_sgd_kernel)(self._kernel_groups())
            return loss
        loss = super().step(closure)
        for group in self.param_groups:
            if group["l1"] > 0:
                prox_l1_([p for p in group["params"] if p.grad is not None],
                         group["lr"] * group["l1"])
        return loss

    def _kernel_groups(self) -> list[tuple]:
        """The arguments of :func:`_prox_sgd_kernel`; momentum buffers made where missing."""
        if len(getattr(self, "_scalars", ())) != len(self.param_groups):
            self._scalars = [None] * len(self.param_groups)
        out = []
        for i, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            momentum, dampening = group["momentum"], group["dampening"]
            values = (group["lr"], momentum, dampening, group["weight_decay"],
                      group["lr"] * group["l1"])
            cached = self._scalars[i]
            if cached is None or cached[0] != values or cached[1].device != params[0].device:
                self._scalars[i] = cached = (values, torch.tensor(
                    values, dtype=params[0].dtype, device=params[0].device))
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
            out.append((params, [p.grad for p in params], bufs, cached[1],
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
        Fuse the proximal map into one pass with ``torch.compile`` (needs a C++ compiler; the
        first step compiles for a few seconds, up to about a minute on a cold cache). On
        LeNet-300-100 it cut the prox from about 2.6 ms to 0.24 ms per step here
        (``benchmarks/step_bench.py``).
    """

    def __init__(self, params, lr: float = 1e-3, *, l1: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None, compile: bool = False) -> None:  # noqa: A002
        params = list(params)
        _check(lr, "lr"), _check(eps, "eps")
        _check(betas[0], "betas[0]", 0, 1), _check(betas[1], "betas[1]", 0, 1)
        super().__init__(params, lr=lr, betas=betas, eps=eps,
                         fused=_fused_default(params) if fused is None else fused)
        self._init_l1(l1)
        self.compile = bool(compile)
        for group in self.param_groups:
            _check(group["lr"], "lr")

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            if group["l1"] <= 0:
                continue
            beta2 = group["betas"][1]
            if self.compile:
                self._compiled_prox(group)
                continue
            params, denoms = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                bias2_sqrt = math.sqrt(1 - beta2 ** float(state["step"]))
                params.append(p)
                denoms.append((state["exp_avg_sq"].sqrt() / bias2_sqrt).add_(group["eps"]))
            prox_l1_diagonal_(params, denoms, group["lr"] * group["l1"])
        return loss

    def _compiled_prox(self, group: dict) -> None:
        kernel = _compiled(_prox_diagonal_kernel)
        beta2 = group["betas"][1]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            scalars = (math.sqrt(1 - beta2 ** float(state["step"])), group["eps"],
                       group["lr"] * group["l1"])
            kernel(p, state["exp_avg_sq"],
                   *(torch.tensor(x, dtype=p.dtype, device=p.device) for x in scalars))
