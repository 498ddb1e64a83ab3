"""The rules that decide λ, as pure functions of counts, sorted gradient magnitudes and state.

Two families (docs/design.md §5):

* the **per-step controller** of :class:`~l1sparse.scheduler.SparsityScheduler`: a scheduled
  zero fraction that rises from the dense side to the target (:func:`ramp_progress`,
  :func:`scheduled_zero_fraction`), and a multiplicative correction of λ from the count alone
  (:func:`controller_factor`), started from the first-order guess (:func:`first_order_guess`);
* the **paper's update between outer iterations** (retrain mode): at a solution with ``l_t``
  nonzeros and sorted ``γ_(1) ≥ γ_(2) ≥ …``, too sparse → λ down to ``γ_(l*)`` strictly below
  the current λ; too dense → back up the sorted γ of the last too-sparse solution by the
  accumulated overshoot; a bracket ``[λ_dense, λ_sparse]`` with expiry and a geometric fallback
  keeps it from cycling (:class:`Bracket`, :func:`propose`).

Nothing here touches a model or an optimizer: every rule is unit-tested on synthetic numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SHAPES",
    "ramp_progress",
    "scheduled_zero_fraction",
    "controller_factor",
    "first_order_guess",
    "between",
    "exact_threshold",
    "Bracket",
    "propose",
]

SHAPES = ("cubic", "linear")


# --------------------------------------------------------------------------- per-step controller


def ramp_progress(step: int, total_steps: int, ramp_start: float, ramp_end: float) -> float:
    """Where ``step`` lies in the ramp ``[ramp_start, ramp_end]·total_steps``, clipped to [0, 1].

    >>> ramp_progress(0, 100, 0.0, 0.5), ramp_progress(25, 100, 0.0, 0.5), ramp_progress(80, 100, 0.0, 0.5)
    (0.0, 0.5, 1.0)
    """
    start, end = ramp_start * total_steps, ramp_end * total_steps
    if end <= start:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start) / (end - start)))


def scheduled_zero_fraction(progress: float, final: float, *, initial: float = 0.0,
                            shape: str = "cubic") -> float:
    """The zero fraction scheduled at ``progress`` ∈ [0, 1] of the ramp.

    ``cubic`` is the schedule of gradual magnitude pruning (Zhu & Gupta 2017),
    ``s_f + (s_0 − s_f)(1 − t)³``: fast while many weights are left, slow near the target,
    where each further zero costs most. ``linear`` is ``s_0 + (s_f − s_0) t``.

    >>> scheduled_zero_fraction(0.5, 0.9)
    0.7875
    >>> scheduled_zero_fraction(1.0, 0.9, shape="linear")
    0.9
    """
    if shape == "cubic":
        return final + (initial - final) * (1.0 - progress) ** 3
    if shape == "linear":
        return initial + (final - initial) * progress
    raise ValueError(f"The 'shape' parameter must be one of {list(SHAPES)}. Got {shape!r}.")


def controller_factor(nnz: float, nnz_scheduled: float, *, gain: float,
                      max_factor: float) -> float:
    """The factor by which λ changes in one step: ``(nnz / nnz_scheduled) ** gain``, clipped to
    ``[1/max_factor, max_factor]``.

    The error is relative in the count of nonzeros, so one gain fits 50 % and 98 % targets
    alike: 10 % too many nonzeros raise λ by the same factor whatever the target. The rule is
    an integral controller in log λ; a small ``gain`` lets the count follow a slowly moving
    schedule without overshooting it.

    >>> round(controller_factor(110, 100, gain=0.1, max_factor=1.05), 6)
    1.009577
    >>> controller_factor(100, 100, gain=0.1, max_factor=1.05)
    1.0
    >>> controller_factor(1000, 1, gain=1.0, max_factor=1.05)
    1.05
    """
    nnz, nnz_scheduled = max(float(nnz), 0.5), max(float(nnz_scheduled), 0.5)
    factor = math.exp(gain * math.log(nnz / nnz_scheduled))
    return min(max(factor, 1.0 / max_factor), max_factor)


def first_order_guess(scores: Tensor, k: float) -> float:
    """λ at which, by the first-order conditions, ``k`` weights would be under enough pressure
    to stay nonzero: between the k-th and (k+1)-th largest ``γ_i / c_i`` (:func:`between`).
    Falls back to the largest positive score when the k-th is zero, and to 0 when all are.

    >>> first_order_guess(torch.tensor([4.0, 1.0, 3.0, 2.0]), 2)
    2.449489742783178
    """
    ordered = scores.flatten().sort(descending=True).values
    if ordered.numel() == 0:
        return 0.0
    k = max(1, min(int(round(k)), ordered.numel()))
    guess = between(ordered, k)
    if guess <= 0:
        positive = ordered[ordered > 0]
        guess = float(positive[-1]) if positive.numel() else 0.0
    return guess


def between(gamma: Tensor, k: int) -> float:
    """A λ between the k-th and (k+1)-th largest γ (geometric mean), 1-indexed; ``gamma``
    sorted in decreasing order.

    By the first-order conditions, at such a λ the k weights under most pressure are nonzero and
    the next one is not: a point inside the interval of support size k, not at its knot.

    >>> between(torch.tensor([4.0, 1.0, 0.25]), 2)
    0.5
    >>> between(torch.tensor([4.0, 1.0]), 2)
    0.5
    """
    k = min(k, gamma.numel())
    upper = float(gamma[k - 1])
    lower = float(gamma[k]) if k < gamma.numel() else 0.0
    return math.sqrt(upper * lower) if lower > 0 else upper / 2


def exact_threshold(scores: Tensor, k: int) -> float:
    """A threshold that exactly ``k`` of ``scores`` exceed: midway between the k-th and
    (k+1)-th largest (ties can make an exact count impossible; then fewer exceed it).

    >>> scores = torch.tensor([0.1, 0.5, 0.3, 0.9], dtype=torch.float64)
    >>> t = exact_threshold(scores, 2)
    >>> t, int((scores > t).sum())
    (0.4, 2)
    """
    ordered = scores.flatten().sort(descending=True).values
    n = ordered.numel()
    if k <= 0:
        return float(ordered[0]) if n else 0.0
    if k >= n:
        return -1.0
    return 0.5 * (float(ordered[k - 1]) + float(ordered[k]))


# --------------------------------------------------------------------------- the paper's update


@dataclass
class Bracket:
    """The tightest known λ on each side of one scope's target, with the iteration that set it."""

    dense: tuple[float, int] | None = None  # (λ, iteration) known to give too many nonzeros
    sparse: tuple[float, int] | None = None  # (λ, iteration) known to give too few
    sparse_gamma: Tensor | None = None  # sorted γ of the last too-sparse solution
    overshoot: float = 0.0

    def expire(self, now: int, memory: int | None) -> None:
        """Forget ends older than ``memory`` iterations (in a continued run the solution
        moves, so an old end is no longer a bound)."""
        if memory is None:
            return
        if self.dense is not None and now - self.dense[1] > memory:
            self.dense = None
        if self.sparse is not None and now - self.sparse[1] > memory:
            self.sparse = None
            self.sparse_gamma = None
            self.overshoot = 0.0


def propose(lam: float, count: int, target: float, gamma: Tensor, br: Bracket, it: int,
            *, max_step: float | None, memory: int | None) -> float:
    """The paper's next λ for one scope from its nnz ``count``, the target nnz and the sorted
    (decreasing) gradient magnitudes ``gamma`` at the current solution. Updates ``br``.

    >>> br = Bracket()
    >>> g = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])
    >>> propose(10.0, 1, 3, g, br, 1, max_step=None, memory=None)  # too sparse: between γ_(3), γ_(4)
    1.4142135623730951
    >>> br.sparse
    (10.0, 1)
    """
    br.expire(it, memory)
    k = max(1, min(int(round(target)), gamma.numel()))
    if count < target:  # too sparse: lower λ
        keep = memory is None and br.sparse is not None
        br.sparse = (min(lam, br.sparse[0]) if keep else lam, it)
        br.sparse_gamma, br.overshoot = gamma, 0.0
        below = gamma[gamma < lam * (1 - 1e-9)]
        if below.numel() == 0:
            proposal = lam / 2
        else:
            proposal = min(between(gamma, k), float(below[0]))
            if proposal <= 0:
                proposal = lam / 2
    else:  # too dense: raise λ
        keep = memory is None and br.dense is not None
        br.dense = (max(lam, br.dense[0]) if keep else lam, it)
        if br.sparse_gamma is not None:
            br.overshoot += count - target
            idx = int(round(target - br.overshoot))
            proposal = between(br.sparse_gamma, max(1, idx))
            if proposal <= lam:
                proposal = lam * 2
        else:
            proposal = lam * 2 if lam > 0 else float(gamma[0]) if gamma.numel() else 1.0
    if max_step is not None and lam > 0:
        proposal = min(max(proposal, lam / max_step), lam * max_step)
    lo = br.dense[0] if br.dense else None
    hi = br.sparse[0] if br.sparse else None
    if lo is not None and hi is not None and lo < hi:
        # stay clear of the ends, where a proposal can creep towards a knot without end
        margin = (hi / lo) ** 0.05
        if not (lo * margin < proposal < hi / margin):
            proposal = math.sqrt(lo * hi)
    elif lo is not None and hi is None and proposal <= lo:
        proposal = lo * 2
    elif hi is not None and lo is None and proposal >= hi:
        proposal = hi / 2
    return proposal
