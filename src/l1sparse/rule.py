"""The rules that decide λ, as pure functions of counts, sorted gradient magnitudes and state.

Two families (docs/design.md §5):

* the **per-step controller** of :class:`~l1sparse.scheduler.SparsityScheduler`: a scheduled
  zero fraction that rises from the dense side to the target (:func:`ramp_progress`,
  :func:`scheduled_zero_fraction`), and a multiplicative correction of λ from the count alone
  (:func:`controller_factor`), started from the first-order guess (:func:`first_order_guess`);
* the **sorted-gradient update between outer iterations** (``rule="sorted"`` of
  :mod:`l1sparse.retrain`, from the group's sibling paper): at a solution with ``l_t``
  nonzeros and sorted ``γ_(1) ≥ γ_(2) ≥ …``, too sparse → λ down to ``γ_(l*)`` strictly below
  the current λ; too dense → back up the sorted γ of the last too-sparse solution by the
  accumulated overshoot; a bracket ``[λ_dense, λ_sparse]`` with expiry and a geometric fallback
  keeps it from cycling (:class:`Bracket`, :func:`propose`);
* the **paper's own bracketed-median update** (``rule="paper"``, as its authors ran it,
  ``PAPER.md``): among all runs so far, the bracket is the closest run at or below the target
  count and the closest at or above it (:func:`paper_bracket`); the next λ is the median of the
  full-data ``γ`` lying strictly inside the bracket, its midpoint when none does
  (:func:`median_inside`, :func:`paper_next_lambda`); per layer the same with each layer's
  counts and ``γ``, and a per-layer target is met when ``k`` of its ``K`` layers are within
  their relative tolerance (:func:`layers_within`).

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
    "paper_bracket",
    "median_inside",
    "paper_next_lambda",
    "layers_within",
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


def first_order_guess_tensor(scores: Tensor, k: float) -> Tensor:
    """:func:`first_order_guess` as a 0-d tensor on the scores' device, computed without a
    host synchronisation (the caller reads it together with whatever else it reads); NaN when
    a score is not finite.

    >>> float(first_order_guess_tensor(torch.tensor([4.0, 1.0, 3.0, 2.0]), 2))
    2.449489742783178
    >>> float(first_order_guess_tensor(torch.tensor([2.0, 0.0, 0.0]), 2))
    2.0
    """
    flat = scores.flatten().double()
    n = flat.numel()
    if n == 0:
        return torch.zeros((), dtype=torch.float64, device=scores.device)
    k = max(1, min(int(round(k)), n))
    top = flat.topk(min(k + 1, n)).values
    upper = top[k - 1]
    lower = top[k] if k < n else torch.zeros_like(upper)
    guess = torch.where(lower > 0, (upper * lower).sqrt(), upper / 2)
    # the k-th score is zero: the smallest positive one (0 when none is)
    smallest_positive = torch.where(flat > 0, flat, torch.full_like(flat, math.inf)).min()
    fallback = torch.where(torch.isfinite(smallest_positive), smallest_positive,
                           torch.zeros_like(smallest_positive))
    guess = torch.where(guess > 0, guess, fallback)
    return torch.where(torch.isfinite(flat).all(), guess, torch.full_like(guess, math.nan))


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


# --------------------------------------------------------------------------- the paper's own rule


def paper_bracket(runs, target: float) -> tuple[float | None, float | None]:
    """The bracket ``(λ_low, λ_up)`` of the paper's rule from the runs so far.

    ``runs`` is a sequence of ``(λ, count)``. ``λ_up`` comes from the run(s) whose count is the
    largest at or below ``target`` (too sparse, or on it): the smallest λ among them. ``λ_low``
    comes from the run(s) whose count is the smallest at or above ``target`` (too dense, or on
    it): the largest λ among them. ``None`` for a side no run is on.

    >>> paper_bracket([(1e-3, 24), (1e-7, 25380), (1.4e-5, 14644), (3e-5, 3622)], 2000)
    (3e-05, 0.001)
    >>> paper_bracket([(1e-3, 24), (2e-3, 24), (1e-7, 900)], 2000)
    (None, 1e-07)
    """
    below = [(lam, c) for lam, c in runs if c <= target]
    above = [(lam, c) for lam, c in runs if c >= target]
    up = low = None
    if below:
        best = max(c for _, c in below)
        up = min(lam for lam, c in below if c == best)
    if above:
        best = min(c for _, c in above)
        low = max(lam for lam, c in above if c == best)
    return low, up


def median_inside(gamma: Tensor, low: float, high: float) -> float:
    """The median of the ``gamma`` lying strictly between ``low`` and ``high`` (in either
    order); the midpoint ``(low + high) / 2`` when none does.

    The median of an even number of values is the mean of the two middle ones.

    >>> median_inside(torch.tensor([0.5, 1.0, 2.0, 3.0, 9.0]), 0.5, 3.5)
    2.0
    >>> median_inside(torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.0, 10.0)
    2.5
    >>> median_inside(torch.tensor([1.0, 9.0]), 2.0, 4.0)
    3.0
    """
    lo, hi = min(low, high), max(low, high)
    g = gamma.flatten().double()
    inside = g[(g > lo) & (g < hi)].sort().values
    m = inside.numel()
    if m == 0:
        return 0.5 * (lo + hi)
    if m % 2:
        return float(inside[m // 2])
    return 0.5 * float(inside[m // 2 - 1] + inside[m // 2])


def paper_next_lambda(runs, target: float, gamma: Tensor) -> float:
    """The paper's next λ for one scope: the median of ``gamma`` (full-data ``|∂L/∂w|`` at the
    last trained weights, on the same scale as the λ of ``runs``) strictly inside the bracket
    of :func:`paper_bracket`, the bracket's midpoint when none is.

    Raises
    ------
    ValueError
        If the runs do not bracket the target (no run on one side of it).

    >>> runs = [(1e-3, 24), (1e-7, 25380)]
    >>> g = torch.tensor([5e-3, 2e-5, 1e-5, 8e-8], dtype=torch.float64)
    >>> round(paper_next_lambda(runs, 2000, g), 12)  # the median of 2e-5 and 1e-5
    1.5e-05
    """
    low, up = paper_bracket(runs, target)
    if low is None or up is None:
        side = "too dense (at or above)" if low is None else "too sparse (at or below)"
        raise ValueError(f"The runs do not bracket the target {target:g}: no run is {side} "
                         f"it. Counts: {[int(c) for _, c in runs]}.")
    return median_inside(gamma, low, up)


def layers_within(counts, targets, rel_tol: float) -> list[bool]:
    """Per layer, whether ``|count_k − T_k| ≤ rel_tol · T_k`` (the paper's per-layer test).

    >>> layers_within([567, 1238, 1013, 45], [650, 1200, 1000, 45], 0.05)
    [False, True, True, True]
    """
    if len(counts) != len(targets):
        raise ValueError(f"The counts ({len(counts)}) and targets ({len(targets)}) must have "
                         "one value per layer.")
    return [abs(c - t) <= rel_tol * t + 1e-9 for c, t in zip(counts, targets)]
