"""The proximal step of the ℓ1 term on any ``torch.optim`` optimizer, after its own step.

:class:`ProxSGD` and :class:`ProxAdam` take the proximal step inside ``step()``. A user who
keeps their optimizer (AdamW with weight decay, SGD with Nesterov, Lion, ...) gets the same
step from :class:`ProximalStep`, which :class:`~l1sparse.scheduler.SparsityScheduler` runs from
the optimizer's step post-hook: right after ``optimizer.step()``, on the same parameter groups
and state, before anything else can read the weights.

The threshold makes the fixed points those of the stated problem
``f(Θ) + Σ_k l1_k ‖W_k‖₁`` in the optimizer's own metric (docs/design.md, "Your optimizer"):

* **SGD** (``torch.optim.SGD``, with or without momentum or Nesterov):
  ``τ = lr · l1 · (1 − dampening) / (1 − momentum)``, as :class:`ProxSGD` does;
* **Adam family** (``Adam``, ``AdamW``, ``NAdam``, ``RAdam``; amsgrad's maximum where set):
  per entry ``τ_i = lr · l1 / d_i`` with Adam's own ``d = √v̂ + ε``, as :class:`ProxAdam`
  does — the prox in the metric the step used;
* **any other optimizer** (its metric unknown to l1sparse): the Euclidean
  ``τ = lr · l1``, the proximal gradient step of plain gradient descent. The zeros are exact;
  whether the fixed points are exactly those of the ℓ1 problem depends on the optimizer.

Weight decay on a penalised tensor is left to the optimizer: with it, the problem solved is
the elastic net ``f + wd/2‖W‖² + l1‖W‖₁`` (coupled decay, SGD/Adam) or its decoupled analogue
(AdamW), and the first-order conditions carry the ``wd·W`` term.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from .penalty import L1_WEIGHT
from .prox import ThresholdBatch, _bias2_sqrt, prox_l1_diagonal_, sgd_threshold
from .tensors import PenalisedTensor

__all__ = ["ProximalStep", "metric_family"]

log = logging.getLogger(__name__)

_ADAM_FAMILY = ("Adam", "AdamW", "NAdam", "RAdam")


def metric_family(optimizer: torch.optim.Optimizer) -> str:
    """``"sgd"``, ``"adam"`` or ``"euclidean"``: the metric of the optimizer's step, by class.

    >>> metric_family(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]))
    'adam'
    """
    for cls in type(optimizer).__mro__:
        if cls is torch.optim.SGD:
            return "sgd"
        if cls.__module__.startswith("torch.optim") and cls.__name__ in _ADAM_FAMILY:
            return "adam"
    return "euclidean"


class ProximalStep:
    """Soft-threshold the chosen tensors after a foreign optimizer's step.

    Holds one slot per tensor, ``{"name", "params": [p], "l1"}`` — the shape of one of our
    parameter groups, so the scheduler steers either the same way — and finds for each
    tensor the optimizer group (its ``lr``, momentum, betas) and state it belongs to.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    tensors : sequence of PenalisedTensor

    Raises
    ------
    ValueError
        If a chosen tensor is not among the optimizer's parameters.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 tensors: Sequence[PenalisedTensor]) -> None:
        self.optimizer = optimizer
        self.family = metric_family(optimizer)
        owner = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        missing = [t.name for t in tensors if id(t.param) not in owner]
        if missing:
            raise ValueError(f"The chosen tensors {missing} are not parameters of the optimizer "
                             f"({type(optimizer).__name__}); build it from model.parameters() "
                             f"or name the tensors it holds in include=/exclude=.")
        self._owner = {t.name: owner[id(t.param)] for t in tensors}
        self.slots = {t.name: {"name": t.name, "params": [t.param], "l1": 0.0} for t in tensors}
        if self.family == "euclidean":
            log.info("%s: metric unknown to l1sparse; the proximal step uses the Euclidean "
                     "threshold lr * l1", type(optimizer).__name__)

    def group_of(self, name: str) -> dict:
        """The optimizer's parameter group that holds the tensor ``name`` (looked up afresh:
        ``optimizer.load_state_dict`` replaces the group dicts)."""
        return self.optimizer.param_groups[self._owner[name]]

    @torch.no_grad()
    def apply(self) -> None:
        """One proximal step on every tensor with ``l1 > 0``."""
        batch = ThresholdBatch()
        diag: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        state = self.optimizer.state
        for name, slot in self.slots.items():
            l1 = slot["l1"]
            if l1 <= 0:
                continue
            p = slot["params"][0]
            if p.grad is None:
                continue
            group = self.group_of(name)
            lr = float(group["lr"])
            st = state.get(p, {})
            c = st.get(L1_WEIGHT)
            if self.family == "adam" and "exp_avg_sq" in st:
                v = st["max_exp_avg_sq"] if group.get("amsgrad") else st["exp_avg_sq"]
                d = v.sqrt().div_(_bias2_sqrt(st["step"], group["betas"][1]))
                d.add_(group["eps"])
                if c is not None:
                    d = d / c
                params, denoms = diag.setdefault(lr * l1, ([], []))
                params.append(p)
                denoms.append(d)
                continue
            batch.add(p, sgd_threshold(group, l1) if self.family == "sgd" else lr * l1, c)
        batch.apply()
        for c, (ps, ds) in diag.items():
            prox_l1_diagonal_(ps, ds, c)
