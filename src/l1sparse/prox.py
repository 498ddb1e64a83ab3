"""Soft-thresholding and proximal optimizers.

Both optimizers minimise ``f(Θ) + Σ_g l1_g ‖Θ_g‖₁`` where ``f`` is whatever loss the caller
back-propagates and ``l1_g`` is the ``"l1"`` hyperparameter of parameter group ``g``. With the
mean loss (``reduction="mean"``), ``l1_g`` is λ_k / N (``lambda_per_sample``), with the summed
loss it is λ_k itself. Groups with ``l1 = 0`` (biases) take the plain step.

The arithmetic sits in the functional kernels :func:`prox_sgd` and :func:`prox_adam`, which work
on lists of tensors with ``torch._foreach_*`` operations and can be tested alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["soft_threshold", "soft_threshold_", "ProxSGD", "ProxAdam", "prox_sgd", "prox_adam"]


def soft_threshold(z: Tensor, tau: float | Tensor) -> Tensor:
    """Entrywise soft-thresholding ``S_τ(z) = sign(z)·max(|z| − τ, 0)``.

    Written as ``z − clamp(z, −τ, τ)``, which is exactly zero wherever ``|z| ≤ τ``.

    >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5]), 0.5)
    tensor([-1.5000,  0.0000,  0.0000,  0.0000,  1.0000])
    """
    return soft_threshold_(z.clone(), tau)


def soft_threshold_(z: Tensor, tau: float | Tensor) -> Tensor:
    """In-place :func:`soft_threshold`."""
    if isinstance(tau, Tensor):
        z.sub_(torch.clamp(z, min=-tau, max=tau))
    else:
        if tau < 0:
            raise ValueError(f"The threshold 'tau' must be >= 0. Got {tau}.")
        z.sub_(z.clamp(-tau, tau))
    return z


def _foreach_soft_threshold_(params: list[Tensor], tau: float | list[Tensor]) -> None:
    """``p ← p − clamp(p, −τ, τ)`` for every tensor; τ a scalar or one tensor per param."""
    if isinstance(tau, float):
        inner = torch._foreach_clamp_min(params, -tau)
        torch._foreach_clamp_max_(inner, tau)
    else:
        inner = torch._foreach_minimum(params, tau)
        torch._foreach_maximum_(inner, torch._foreach_neg(tau))
    torch._foreach_sub_(params, inner)


def prox_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    l1: float,
    momentum: float,
    nesterov: bool,
) -> None:
    """One proximal (heavy-ball) SGD step on a list of tensors; updates buffers in place."""
    if momentum:
        for i, buf in enumerate(momentum_buffers):
            if buf is None:
                momentum_buffers[i] = grads[i].detach().clone()
            else:
                buf.mul_(momentum).add_(grads[i])
        bufs = momentum_buffers  # type: ignore[assignment]
        direction = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    else:
        direction = grads
    torch._foreach_add_(params, direction, alpha=-lr)
    if l1 > 0:
        _foreach_soft_threshold_(params, float(lr * l1))


def prox_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    step: int,
    *,
    lr: float,
    l1: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One proximal Adam step: the prox of ``l1‖·‖₁`` in Adam's diagonal metric.

    With ``D = diag(√v̂ + ε) / lr`` the step is ``Θ ← prox_{l1‖·‖₁}^D(Θ − D⁻¹ m̂)``, i.e.
    soft-thresholding with the per-entry threshold ``lr · l1 / (√v̂ + ε)``.
    """
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    bias1 = 1 - beta1**step
    bias2_sqrt = math.sqrt(1 - beta2**step)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lr / bias1)
    if l1 > 0:
        tau = torch._foreach_reciprocal(denom)
        torch._foreach_mul_(tau, lr * l1)
        _foreach_soft_threshold_(params, tau)


def _check(value: float, name: str, low: float = 0.0, high: float | None = None) -> float:
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"The '{name}' parameter must be {bound}. Got {value}.")
    return value


class ProxSGD(Optimizer):
    r"""Proximal stochastic gradient descent with optional momentum.

    .. math::

        v &\leftarrow \mu v + g \\
        \Theta &\leftarrow S_{\alpha\,\ell_1}(\Theta - \alpha v)

    with ``S_τ`` the soft-thresholding operator, ``α = lr`` and ``ℓ1`` the group's ``l1``.
    Without momentum and with the full-batch gradient this is the paper's proximal gradient
    algorithm (Algorithm 3). Zeros are exact.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; each group may set its own ``lr``, ``l1``, ``momentum``.
    lr : float, default 1e-2
    l1 : float, default 0.0
        Coefficient of ``‖·‖₁`` on the scale of the loss being back-propagated.
    momentum : float, default 0.0
    nesterov : bool, default False

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
                 nesterov: bool = False) -> None:
        defaults = dict(
            lr=_check(lr, "lr"), l1=_check(l1, "l1"), momentum=_check(momentum, "momentum", 0, 1),
            nesterov=bool(nesterov),
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check(group["l1"], "l1")
            _check(group["lr"], "lr")

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("l1", 0.0)
            group.setdefault("momentum", 0.0)
            group.setdefault("nesterov", False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ProxSGD does not support sparse gradients.")
                params.append(p)
                grads.append(p.grad)
                bufs.append(self.state[p].get("momentum_buffer"))
            if not params:
                continue
            prox_sgd(params, grads, bufs, lr=group["lr"], l1=group["l1"],
                     momentum=group["momentum"], nesterov=group["nesterov"])
            if group["momentum"]:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss


class ProxAdam(Optimizer):
    r"""Adam with the ℓ1 proximal step taken in Adam's diagonal metric.

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        d &= \sqrt{\hat v} + \epsilon \\
        \Theta &\leftarrow S_{\alpha \ell_1 / d}\big(\Theta - \alpha \hat m / d\big)

    The threshold is per entry; zeros are exact. ``l1`` as in :class:`ProxSGD`.

    Parameters
    ----------
    params : iterable
    lr : float, default 1e-3
    l1 : float, default 0.0
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    """

    def __init__(self, params, lr: float = 1e-3, *, l1: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        defaults = dict(
            lr=_check(lr, "lr"), l1=_check(l1, "l1"),
            betas=(_check(betas[0], "betas[0]", 0, 1), _check(betas[1], "betas[1]", 0, 1)),
            eps=_check(eps, "eps"),
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check(group["l1"], "l1")
            _check(group["lr"], "lr")

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("l1", 0.0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, m, v = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ProxAdam does not support sparse gradients.")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                m.append(state["exp_avg"])
                v.append(state["exp_avg_sq"])
            if not params:
                continue
            # All parameters of a group are created together, so they share the step count.
            step = self.state[params[0]]["step"]
            beta1, beta2 = group["betas"]
            prox_adam(params, grads, m, v, step, lr=group["lr"], l1=group["l1"],
                      beta1=beta1, beta2=beta2, eps=group["eps"])
        return loss
