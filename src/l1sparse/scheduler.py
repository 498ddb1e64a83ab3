"""SparsityScheduler: choose λ inside any training loop, as an lr_scheduler chooses the lr.

The scheduler sits next to the user's optimizer: a proximal one
(:class:`~l1sparse.prox.ProxSGD`, :class:`~l1sparse.prox.ProxAdam`, parameter groups from
:func:`~l1sparse.param_groups` carrying the ℓ1 coefficient ``l1``), or any ``torch.optim``
optimizer with ``model=`` given, whose step is followed by the proximal step of
:class:`~l1sparse.prox_hook.ProximalStep` in its own metric. It rides on the optimizer's step
post-hook: each ``optimizer.step()`` advances it, so the loop needs no call of its own
(``scheduler.step()`` stays valid and does nothing more for a step already taken). Every few
steps (``check_every``) it counts the nonzero weights per scope and sets each tensor's ``l1``
(docs/design.md §5.2):

1. **Ramp.** The scheduled zero fraction rises from the dense side to the target on a cubic
   (or linear) schedule over ``[ramp_start, ramp_end]`` of the steps, as gradual magnitude
   pruning does. λ starts at the first-order guess (between the k-th and (k+1)-th largest
   ``|∂L/∂w_i| / c_i`` of the gradient the loop computed, k the scheduled nonzeros) and is
   corrected every step by the count alone (:func:`~l1sparse.rule.controller_factor`), so the
   count tracks the schedule and never runs irreversibly past the target.
2. **Guard.** Every step the live units of each layer (rows and columns of its weight with a
   nonzero) are counted; if a layer has lost more than ``guard`` of them since the start of the
   guard window (``guard_every`` steps), λ is lowered by ``guard_backoff`` and kept from rising
   for a window: dead ReLU units get no gradient and never come back, so λ is slowed at the
   start of a collapse instead of killing more.
3. **Hold.** From ``hold`` of the steps on, λ and the penalty weights are held fixed, so the
   network returned is trained at the λ returned while the learning rate decays.
4. **Finish.** If ``finish`` and the count is outside the tolerance at the first count of the
   hold, or at the last step, an explicit projection lands on the target: surplus nonzeros
   with the smallest ``|w_i| / c_i`` are set to zero, or missing ones are let in where
   ``|∂L/∂w_i| / c_i`` is largest (a small gradient step on those entries). After a
   projection at the hold point its zeros are kept for the rest of the run (a mask in the
   optimizer's state), so the support is trained on; the last step's projection only mends
   a drift. Each is recorded in :attr:`projections`, the last in :attr:`final`.

Host synchronisations: one per count (every ``check_every`` steps; the first λ's guess is
computed on the device and read with the count), none on the other steps, so on a GPU the
scheduler does not stall the pipeline. A projection (at most two per run, at the hold point and
at the last step, each only when the count is outside the tolerance there) reads a few more.

Sharded parameters (FSDP2's ``fully_shard``, DTensor): the counts, live units, first-order
guess and final projection run on each rank's local shard and are combined with collectives
(:mod:`l1sparse.sharded`), without gathering a full tensor; every rank takes the same decisions.

λ is reported on the summed-loss scale (:attr:`lambdas`): ``l1 · N`` when the loop
back-propagates the mean loss of each batch (``loss_reduction="mean"``, the default; give
``n_samples`` = N), ``l1`` itself for a summed loss.

(About 700 lines, one class: the ramp, the controller, the guard, the hold, the final
projection and the state dict share the scheduler's per-scope state; split apart, each piece
would need all of it. The rules themselves are pure functions in :mod:`l1sparse.rule`.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .penalty import (
    L1_MASK,
    L1_WEIGHT,
    UNPENALISED_GROUP,
    L1Penalty,
    make_penalty,
)
from . import sharded
from .prox_hook import ProximalStep
from .rule import (
    SHAPES,
    controller_factor,
    exact_threshold,
    first_order_guess_tensor,
    ramp_progress,
    scheduled_zero_fraction,
)
from .targets import Target, make_target
from .tensors import describe, resolve_name, select_tensors

__all__ = ["SparsityScheduler", "live_units"]

log = logging.getLogger(__name__)

REDUCTIONS = ("mean", "sum")
REFERENCE_STEPS = 3000  # the run length the controller's default gain and rate are set for


def _live_counts(weight: Tensor) -> list[Tensor]:
    """Live rows and columns (output and input units) of a weight, as 0-d tensors (no host
    sync): a row or column is live when its largest magnitude is nonzero."""
    if weight.dim() < 2:
        n = torch.count_nonzero(weight)
        return [n, n]
    a = weight.detach().abs()
    rows = a.amax(dim=tuple(range(1, a.dim())))
    cols = a.amax(dim=(0, *range(2, a.dim())))
    return [torch.count_nonzero(rows), torch.count_nonzero(cols)]


@torch.no_grad()
def live_units(weight: Tensor) -> tuple[int, int]:
    """``(live outputs, live inputs)`` of a weight: rows and columns (output and input
    channels for a convolution) with at least one nonzero entry.

    >>> live_units(torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]]))
    (2, 2)
    """
    rows, cols = _live_counts(weight)
    return int(rows), int(cols)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"The '{what}' parameter must be a positive integer. Got {value!r}.")
    return int(value)


def _fraction(value, what: str, *, closed: bool = True) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0) or (not closed and value == 1.0):
        raise ValueError(f"The '{what}' parameter must be in [0, 1]. Got {value}.")
    return value


class SparsityScheduler:
    r"""Steer the ``l1`` of a proximal optimizer's groups so the network reaches a target
    sparsity by ``total_steps``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        :class:`~l1sparse.prox.ProxSGD` or :class:`~l1sparse.prox.ProxAdam` with one named
        group per penalised tensor (from :func:`~l1sparse.param_groups`), or any other
        optimizer over the model's parameters (then ``model`` is needed).
    model : nn.Module, optional
        The network. Needed with an optimizer that is not ours; with ours it is checked
        against the groups.
    include, exclude : patterns, optional
        Which tensors are penalised (:func:`~l1sparse.tensors.select_tensors`); with our
        optimizers the groups already say, and keywords that disagree raise ``ValueError``.
    zero_fraction, nnz, layer_zero_fraction, layer_nnz :
        Exactly one target, as in :func:`~l1sparse.targets.make_target` (per-tensor values
        as a list in set order or a mapping from tensor name).
    tol : float, optional
        In the unit of the target; default 0 for counts, 0.005 for fractions.
    total_steps : int
        The number of ``step()`` calls of the run (optimizer steps).
    n_samples : int, optional
        N, the training-set size: needed with ``loss_reduction="mean"`` to report λ on the
        summed scale.
    loss_reduction : {"mean", "sum"}, default "mean"
        What the loop back-propagates.
    penalty : {"reweighted", "l1"} or a penalty object, default "reweighted"
        :class:`~l1sparse.penalty.ReweightedL1Penalty` (per-weight ``c_i`` refreshed every
        ``refresh_every`` steps, held in the optimizer's state) or plain ℓ1.
    shape : {"cubic", "linear"}, default "cubic"
    ramp_start, ramp_end : float, default 0.0, 0.7
        The scheduled zero fraction rises over these shares of ``total_steps``.
    hold : float, default 0.85
        From this share of the steps on, λ and the penalty weights are held.
    gain : float, optional
        Exponent of the per-step correction ``(predicted nnz / scheduled nnz) ** gain``.
        Default 0.05, scaled up by ``3000 / total_steps`` for runs shorter than 3,000 steps.
    max_factor : float, optional
        Largest factor by which λ changes in one step. Default 1.02, raised to the same power
        ``3000 / total_steps`` for shorter runs (λ can then move as far per share of the run).
    guard : float, default 0.1
        Largest share of a layer's live units (rows or columns) that may die within one
        guard window; beyond it λ backs off.
    guard_every : int, optional
        Length of a guard window in steps (live units are counted every step and compared
        with the window's start). Default ``max(10, total_steps // 100)``; also the spacing
        of :attr:`history` rows.
    guard_backoff : float, default 1.5
    lead : float, default 0.05
        The count lags λ (a weight needs steps to shrink to zero), so the controller compares
        where the count is heading (its present trend, an average over ``lead/2`` of the run,
        extrapolated over ``lead`` of the run) with the schedule ``lead`` of the run ahead.
    init_factor : float, default 0.1
        The first λ is this share of the first-order guess: a start on the dense side.
    check_every : int, optional
        Steps between counts of the nonzeros (a pass over every weight); the corrections of
        the steps in between are applied at once. Default ``max(1, min(10, total_steps //
        300))``: counting costs a few percent of a step instead of most of one.
    finish : bool, default True
        Land on the target with an explicit projection where needed: at the hold point, if
        the count is not within the tolerance when λ is frozen (the zeros are then kept for
        the rest of the run, so the support is trained on, as after a magnitude prune), and
        at the last step if it drifted out of it.

    Examples
    --------
    >>> from l1sparse import mlp, param_groups, ProxSGD
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(512, 10, generator=g); y = (X[:, 0] > 0).long()
    >>> net = mlp(10, [32], 2, seed=0)
    >>> opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    >>> sched = SparsityScheduler(opt, zero_fraction=0.8, total_steps=400, n_samples=512)
    >>> for step in range(400):
    ...     idx = torch.randint(0, 512, (64,), generator=g)
    ...     opt.zero_grad()
    ...     torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
    ...     opt.step()
    ...     sched.step()
    >>> sched.met
    True

    Any ``torch.optim`` optimizer (the loop is unchanged; the step hook does the rest):

    >>> net = mlp(10, [32], 2, seed=0)
    >>> opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    >>> sched = SparsityScheduler(opt, model=net, zero_fraction=0.8, total_steps=300,
    ...                           n_samples=512)
    >>> for step in range(300):
    ...     idx = torch.randint(0, 512, (64,), generator=g)
    ...     opt.zero_grad()
    ...     torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
    ...     opt.step()
    >>> sched.met, sched.tensors
    (True, ['fc1', 'fc2'])
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        model: torch.nn.Module | None = None,
        include=None,
        exclude=None,
        zero_fraction: float | None = None,
        nnz: int | None = None,
        layer_zero_fraction: Sequence[float] | Mapping[str, float] | None = None,
        layer_nnz: Sequence[int] | Mapping[str, int] | None = None,
        tol: float | None = None,
        total_steps: int,
        n_samples: int | None = None,
        loss_reduction: str = "mean",
        penalty: str | L1Penalty = "reweighted",
        shape: str = "cubic",
        ramp_start: float = 0.0,
        ramp_end: float = 0.7,
        hold: float = 0.85,
        gain: float | None = None,
        max_factor: float | None = None,
        guard: float = 0.1,
        guard_every: int | None = None,
        guard_backoff: float = 1.5,
        lead: float = 0.05,
        init_factor: float = 0.1,
        check_every: int | None = None,
        finish: bool = True,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"The 'optimizer' parameter must be a torch.optim.Optimizer. "
                            f"Got {type(optimizer).__name__}.")
        if getattr(optimizer, "_l1sparse_scheduler", None) is not None:
            raise ValueError("The optimizer already has a SparsityScheduler; call its remove() "
                             "before attaching another.")
        self._prox: ProximalStep | None = None
        if "l1" in optimizer.defaults:  # ours: the groups say which tensors
            groups = [g for g in optimizer.param_groups
                      if "l1" in g and g.get("name", UNPENALISED_GROUP) != UNPENALISED_GROUP]
            if not groups:
                raise ValueError("The optimizer has no named 'l1' parameter groups: build it "
                                 "from l1sparse.param_groups(model).")
            names = [g["name"] for g in groups]
            if model is not None:
                chosen = [t.name for t in select_tensors(model, include, exclude, warn=False)]
                if chosen != names:
                    raise ValueError(f"The optimizer's groups penalise {names}, but model= "
                                     f"with include/exclude chooses {chosen}; build the groups "
                                     f"with param_groups(model, include=..., exclude=...).")
            elif include is not None or exclude is not None:
                raise ValueError("include/exclude need model= (with our optimizers the groups "
                                 "already choose the tensors).")
        else:  # any torch.optim optimizer: the proximal step rides on its step hook
            if model is None:
                raise ValueError(
                    f"With {type(optimizer).__name__} (not ProxSGD/ProxAdam) give "
                    f"SparsityScheduler(optimizer, model=model, ...): the scheduler then takes "
                    f"the proximal step of the chosen tensors after each optimizer step.")
            tensors = select_tensors(model, include, exclude)
            self._prox = ProximalStep(optimizer, tensors)
            names = [t.name for t in tensors]
            groups = list(self._prox.slots.values())
            log.info("%s", describe(tensors))
        self.optimizer = optimizer
        self._optimizer_steps = self._seen_optimizer_steps = 0
        self.total_steps = _positive_int(total_steps, "total_steps")
        if loss_reduction not in REDUCTIONS:
            raise ValueError(f"The 'loss_reduction' parameter must be one of {list(REDUCTIONS)}. "
                             f"Got {loss_reduction!r}.")
        if n_samples is not None:
            n_samples = _positive_int(n_samples, "n_samples")
        self.n_samples, self.loss_reduction = n_samples, loss_reduction
        if shape not in SHAPES:
            raise ValueError(f"The 'shape' parameter must be one of {list(SHAPES)}. Got {shape!r}.")
        self.shape = shape
        self.ramp_start = _fraction(ramp_start, "ramp_start")
        self.ramp_end = _fraction(ramp_end, "ramp_end")
        self.hold = _fraction(hold, "hold")
        if not self.ramp_start <= self.ramp_end <= self.hold:
            raise ValueError("The schedule must have ramp_start <= ramp_end <= hold. Got "
                             f"{self.ramp_start}, {self.ramp_end}, {self.hold}.")
        # a short run moves λ as fast per share of the run as one of REFERENCE_STEPS does
        speed = max(1.0, REFERENCE_STEPS / self.total_steps)
        self.gain = 0.05 * speed if gain is None else float(gain)
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"The 'gain' parameter must be > 0. Got {gain!r}.")
        self.max_factor = 1.02 ** speed if max_factor is None else float(max_factor)
        if not (math.isfinite(self.max_factor) and self.max_factor > 1):
            raise ValueError(f"The 'max_factor' parameter must be > 1. Got {max_factor!r}.")
        self.guard = _fraction(guard, "guard")
        self.guard_every = (max(10, self.total_steps // 100) if guard_every is None
                            else _positive_int(guard_every, "guard_every"))
        self.check_every = (max(1, min(10, self.total_steps // 300)) if check_every is None
                            else _positive_int(check_every, "check_every"))
        self.guard_backoff = float(guard_backoff)
        if not (math.isfinite(self.guard_backoff) and self.guard_backoff >= 1):
            raise ValueError(f"The 'guard_backoff' parameter must be >= 1. Got {guard_backoff!r}.")
        self.lead = _fraction(lead, "lead")
        self.slope_weight = 1.0 / max(1, round(self.lead * self.total_steps) / 2)
        self.init_factor = float(init_factor)
        if not (math.isfinite(self.init_factor) and self.init_factor > 0):
            raise ValueError(f"The 'init_factor' parameter must be > 0. Got {init_factor!r}.")
        self.finish = bool(finish)
        self.penalty = make_penalty(penalty)

        self._names = names
        # sharded parameters (FSDP2, DTensor): counts and selections on the local shards,
        # combined with collectives (l1sparse.sharded), so every rank takes the same decisions
        self._sharded = sharded.any_dtensor(p for g in groups for p in g["params"])
        for g in groups:
            for p in g["params"]:
                sharded.check_placements(g["name"], p)
        layers = [(g["name"], sum(p.numel() for p in g["params"])) for g in groups]
        if model is not None:  # per-tensor targets may name a tensor by any of its names
            chosen = select_tensors(model, include, exclude, warn=False)
            layer_nnz, layer_zero_fraction = (
                {resolve_name(chosen, k) if isinstance(k, str) else k: v
                 for k, v in m.items()} if isinstance(m, Mapping) else m
                for m in (layer_nnz, layer_zero_fraction))
        self.target: Target = make_target(layers, nnz=nnz, zero_fraction=zero_fraction,
                                          layer_nnz=layer_nnz,
                                          layer_zero_fraction=layer_zero_fraction, tol=tol)
        # dynamic state (state_dict)
        self.last_step = 0
        self.skipped_steps = 0
        self._l1 = [float(self._groups[s.layers[0]]["l1"]) for s in self.target.scopes]
        self._slope = [0.0 for _ in self.target.scopes]  # EMA of the change of nnz per step
        self._prev = [None for _ in self.target.scopes]
        self._live: dict[str, tuple[int, int]] = {}
        self._rise_blocked_until = 0
        self.guard_events = 0
        self.final: dict | None = None
        self.projections: list[dict] = []
        self.frozen = False  # the zeros are kept (after a projection at the hold point)
        self._hold_checked = False
        self.history: list[dict] = []
        self._guesses: dict[int, float] = {}
        self._nnz: dict[str, int] = self._count()
        # live units at the start of the current guard window
        self._live_ref: dict[str, tuple[int, int]] = dict(self._live)
        self._window_start = self._last_check = self._last_record = 0
        self._write_l1()
        # attached last, once every argument is valid: a constructor that raised leaves the
        # optimizer free. A step() that calls its parent's step() (ProxAdam: Adam's) fires
        # the hooks twice once torch has patched the parent class: act only when the
        # outermost step ends
        self._depth = 0
        self._hooks = [optimizer.register_step_pre_hook(self._on_step_begin),
                       optimizer.register_step_post_hook(self._on_optimizer_step)]
        optimizer._l1sparse_scheduler = self

    @property
    def _groups(self) -> dict[str, dict]:
        """The penalised groups (or, with a foreign optimizer, the proximal step's slots) by
        name, looked up afresh: ``optimizer.load_state_dict`` replaces the group dicts."""
        if self._prox is not None:
            return self._prox.slots
        by_name = {g.get("name"): g for g in self.optimizer.param_groups}
        return {n: by_name[n] for n in self._names}

    def _lr(self, name: str) -> float:
        group = (self._prox.group_of(name) if self._prox is not None
                 else self._groups[name])
        return float(group["lr"])

    @property
    def tensors(self) -> list[str]:
        """The names of the penalised tensors, in order."""
        return list(self._names)

    def remove(self) -> None:
        """Detach from the optimizer: drop the step hook (and, with a foreign optimizer, the
        penalty weights it left in the optimizer's state). The weights keep their zeros."""
        for hook in self._hooks:
            hook.remove()
        for g in self._groups.values():
            for p in g["params"]:
                self.optimizer.state.get(p, {}).pop(L1_MASK, None)
        if self._prox is not None:
            for slot in self._prox.slots.values():
                self.optimizer.state.get(slot["params"][0], {}).pop(L1_WEIGHT, None)
        if getattr(self.optimizer, "_l1sparse_scheduler", None) is self:
            self.optimizer._l1sparse_scheduler = None

    # ------------------------------------------------------------------ what the user reads

    @property
    def nnz(self) -> dict[str, int]:
        """Nonzero weights per layer at the last count (every ``check_every`` steps, and at
        the last scheduled step)."""
        return dict(self._nnz)

    @property
    def met(self) -> bool:
        """Whether the count (:attr:`nnz`) is within the tolerance of the target."""
        return self.target.met(self._nnz)

    @property
    def scale(self) -> float:
        """Factor from the optimizer's ``l1`` to λ on the summed scale."""
        if self.loss_reduction == "sum":
            return 1.0
        if self.n_samples is None:
            raise ValueError("λ on the summed scale needs the training-set size: give "
                             "SparsityScheduler(n_samples=N) (or loss_reduction='sum').")
        return float(self.n_samples)

    @property
    def lambdas(self) -> dict[str, float]:
        """λ_k per layer on the summed-loss scale."""
        s = self.scale
        return {n: float(g["l1"]) * s for n, g in self._groups.items()}

    @property
    def lam(self) -> float | list[float]:
        """One λ for a global target, a list per layer otherwise (summed scale)."""
        values = list(self.lambdas.values())
        return values if self.target.per_layer else values[0]

    @property
    def penalty_weights(self) -> dict[str, Tensor]:
        """The ``c_i`` of the weighted penalty per tensor (empty for plain ℓ1)."""
        out = {}
        for n, g in self._groups.items():
            c = self.optimizer.state.get(g["params"][0], {}).get(L1_WEIGHT)
            if c is not None:
                out[n] = c
        return out

    @torch.no_grad()
    def _refresh_weights(self) -> None:
        """Store ``penalty.weights(w)`` for every penalised tensor in the optimizer's state,
        where the proximal steps read them."""
        groups = self._groups
        params = [p for g in groups.values() for p in g["params"]]
        if hasattr(self.penalty, "prepare"):
            self.penalty.prepare(params)
        for p in params:
            c = self.penalty.weights(p)
            state = self.optimizer.state[p]
            if c is None:
                state.pop(L1_WEIGHT, None)
            else:
                state[L1_WEIGHT] = c.to(p.dtype)

    def scheduled_zero_fraction(self, step: int | None = None) -> list[float]:
        """The zero fraction scheduled per scope at ``step`` (default: the last one)."""
        step = self.last_step if step is None else step
        t = ramp_progress(step, self.total_steps, self.ramp_start, self.ramp_end)
        return [scheduled_zero_fraction(t, 1.0 - s.nnz / s.total, shape=self.shape)
                for s in self.target.scopes]

    # ------------------------------------------------------------------ the step

    def _count(self, extra: Mapping[int, Tensor] | None = None) -> dict[str, int]:
        """Nonzeros per layer; also the live units (rows, columns) of each layer into
        ``self._live``, and the values of the 0-d tensors ``extra`` (by scope) into
        ``self._guesses``. One host sync for all of it."""
        groups = self._groups
        names = list(groups)
        if self._sharded:  # guesses already read (_first_guesses), counts all-reduced
            counts = sharded.nnz_and_live([groups[n]["params"] for n in names])
            self._live = {n: (rows, cols) for n, (_, rows, cols) in zip(names, counts)}
            self._guesses = {i: float(v) for i, v in (extra or {}).items()}
            return {n: nnz for n, (nnz, _, _) in zip(names, counts)}
        stats = []
        for n in names:
            ps = groups[n]["params"]
            stats.append(sum(torch.count_nonzero(p) for p in ps))
            stats += _live_counts(ps[0])
        extra = dict(extra or {})
        stats = [v.double() for v in stats] + [v.to(stats[0].device, torch.float64)
                                               for v in extra.values()]
        values = torch.stack(stats).tolist()
        self._live = {n: (int(values[3 * i + 1]), int(values[3 * i + 2]))
                      for i, n in enumerate(names)}
        self._guesses = dict(zip(extra, values[3 * len(names):]))
        return {n: int(values[3 * i]) for i, n in enumerate(names)}

    def _first_guesses(self, t: int) -> dict[int, Tensor]:
        """For every scope still at λ = 0, the first-order guess at the count scheduled
        ``lead`` ahead, as a tensor read with the next count (no host sync of its own)."""
        out = {}
        if all(l1 > 0 for l1 in self._l1):
            return out
        ahead = min(self.total_steps, t + round(self.lead * self.total_steps))
        for i, (s, zero) in enumerate(zip(self.target.scopes,
                                          self.scheduled_zero_fraction(ahead))):
            if self._l1[i] > 0 or zero <= 0:
                continue
            if self._sharded:  # from the local shards, with collectives
                params = [p for n in s.layers for p in self._groups[n]["params"]]
                guess = sharded.guess_from_gradients(
                    params, [self.optimizer.state.get(p, {}).get(L1_WEIGHT) for p in params],
                    (1.0 - zero) * s.total)
                if guess is not None:
                    out[i] = torch.tensor(guess, dtype=torch.float64)
                continue
            scores = self._scores(s)
            if scores is not None:
                out[i] = first_order_guess_tensor(scores, (1.0 - zero) * s.total)
        return out

    def _write_l1(self) -> None:
        groups = self._groups
        for s, l1 in zip(self.target.scopes, self._l1):
            for n in s.layers:
                groups[n]["l1"] = l1

    def _on_step_begin(self, optimizer, args, kwargs) -> None:
        self._depth += 1

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        """The step post-hook: the proximal step (foreign optimizers), then the scheduler's."""
        self._depth = max(0, self._depth - 1)
        if self._depth:
            return
        self._optimizer_steps += 1
        if self._prox is not None:
            self._prox.apply()
        if self.frozen:
            self._keep_zeros()
        self._advance()

    def _grads_finite(self) -> bool:
        grads = [p.grad for g in self._groups.values() for p in g["params"] if p.grad is not None]
        if not grads:
            return True
        if self._sharded:
            return sharded.all_finite(grads)
        norms = torch._foreach_norm(grads, float("inf"))
        return bool(torch.isfinite(torch.stack(norms)).all())

    def _scores(self, scope) -> Tensor | None:
        """``|∂L/∂w_i| / c_i`` over a scope from the gradients the loop computed."""
        parts = []
        groups = self._groups
        for n in scope.layers:
            for p in groups[n]["params"]:
                if p.grad is None:
                    return None
                c = self.optimizer.state.get(p, {}).get(L1_WEIGHT)
                g = p.grad.detach().abs().flatten().float()
                parts.append(g if c is None else g / c.flatten().float())
        return torch.cat(parts)

    def step(self) -> None:
        """Optional: each ``optimizer.step()`` already advanced the scheduler through the
        optimizer's step hook. Called after a step the optimizer did not take (a GradScaler
        skips it when the gradients are not finite), it records the skip."""
        if self._optimizer_steps == self._seen_optimizer_steps:
            self.skipped_steps += 1
        self._seen_optimizer_steps = self._optimizer_steps

    @torch.no_grad()
    def _advance(self) -> None:
        """One scheduler step, run from the optimizer's step hook."""
        self.last_step += 1
        t = self.last_step
        if t > self.total_steps:  # trained on past the schedule: λ held, counts kept fresh
            if t % self.check_every == 0:
                self._nnz = self._count()
            return
        steering = t <= self.hold * self.total_steps
        if steering and self.penalty.adaptive and (t - 1) % self.penalty.refresh_every == 0:
            self._refresh_weights()
        # counting is a pass over every weight: done every `check_every` steps (and at the
        # first and last), with the correction of the steps in between applied at once
        if not (t == 1 or t % self.check_every == 0 or t == self.total_steps):
            return
        elapsed, self._last_check = t - self._last_check, t
        self._nnz = self._count(self._first_guesses(t) if steering else None)
        if steering:
            self._steer(t, elapsed)
        elif not self._hold_checked:  # the first count with λ frozen
            self._hold_checked = True
            self._project_at_hold(t)
        if t == self.total_steps and self.finish and not self.met:
            self._finish()
            self._nnz = self._count()
        if t - self._last_record >= self.guard_every or t == self.total_steps:
            self._last_record = t
            self.history.append({"step": t, "lambdas": self.lambdas if self._can_scale() else
                                 {n: float(g["l1"]) for n, g in self._groups.items()},
                                 "nnz": dict(self._nnz), "met": self.met,
                                 "scheduled_zero_fraction": self.scheduled_zero_fraction(t)})

    def _can_scale(self) -> bool:
        return self.loss_reduction == "sum" or self.n_samples is not None

    def _steer(self, t: int, elapsed: int = 1) -> None:
        backoff = self._guard(t)
        # the count lags λ (a weight needs steps to shrink to zero): steer towards the
        # schedule a little ahead
        horizon = round(self.lead * self.total_steps)
        ahead = min(self.total_steps, t + horizon)
        for i, (s, sched_zero) in enumerate(zip(self.target.scopes,
                                                self.scheduled_zero_fraction(ahead))):
            now = sum(self._nnz[n] for n in s.layers)
            if self._prev[i] is not None:  # an average over about lead/2 of the run
                w = min(1.0, self.slope_weight * elapsed)
                self._slope[i] += w * ((now - self._prev[i]) / elapsed - self._slope[i])
            self._prev[i] = now
            # where the count is heading: its present trend over the horizon
            count = max(0.5, now + self._slope[i] * horizon) if self._l1[i] > 0 else now
            scheduled = (1.0 - sched_zero) * s.total
            if self._l1[i] <= 0:
                if sched_zero <= 0 or count <= scheduled:
                    continue
                guess = self._guesses.get(i)  # read with the count (_first_guesses)
                if guess is None or not math.isfinite(guess):
                    continue
                self._l1[i] = self.init_factor * guess
                log.debug("scope %d: first l1 %.4g at step %d", i, self._l1[i], t)
                continue
            if backoff:
                self._l1[i] /= self.guard_backoff
                continue
            factor = controller_factor(count, scheduled, gain=self.gain * elapsed,
                                       max_factor=self.max_factor ** elapsed)
            if factor > 1 and t < self._rise_blocked_until:
                factor = 1.0
            self._l1[i] *= factor
        self._write_l1()

    def _guard(self, t: int) -> bool:
        """Whether a layer has lost more than ``guard`` of its live units (rows or columns)
        since the start of the guard window; checked at every count (every ``check_every``
        steps), so λ backs off at the start of a collapse, not after it. A new window starts every ``guard_every`` steps and after
        each back-off."""
        if self.guard >= 1:
            return False
        live, ref = self._live, self._live_ref
        for n, (rows, cols) in live.items():
            r0, c0 = ref.get(n, (rows, cols))
            if rows < (1 - self.guard) * r0 or cols < (1 - self.guard) * c0:
                self.guard_events += 1
                self._rise_blocked_until = t + self.guard_every
                self._live_ref = dict(live)
                self._window_start = t
                log.info("guard: %s lost live units (%d→%d rows, %d→%d cols) at step %d; "
                         "lambda backs off", n, r0, rows, c0, cols, t)
                return True
        if t - self._window_start >= self.guard_every:
            self._live_ref = dict(live)
            self._window_start = t
        return False

    @torch.no_grad()
    def _project_at_hold(self, t: int) -> None:
        """λ is frozen from here on: if the count is not within the tolerance, project onto
        the target now and keep its zeros, so that the rest of the run trains the projected
        support (a projection at the last step leaves no step to recover from it: on a small
        ResNet at 98 % zeros, where the live-unit guard held λ back, that final cut of 40 %
        of the survivors left a network at chance)."""
        if not self.finish or self.met:
            return
        self._finish()
        self._nnz = self._count()
        for g in self._groups.values():
            for p in g["params"]:
                self.optimizer.state[p][L1_MASK] = (sharded.local(p) != 0).to(p.dtype)
        self.frozen = True
        log.info("projection at the hold point (step %d): the zeros are kept from here on", t)

    @torch.no_grad()
    def _keep_zeros(self) -> None:
        for g in self._groups.values():
            for p in g["params"]:
                mask = self.optimizer.state.get(p, {}).get(L1_MASK)
                if mask is not None:
                    sharded.local(p).mul_(mask)

    @torch.no_grad()
    def _finish(self) -> None:
        """The explicit final projection onto the target count, scope by scope."""
        removed = revived = 0
        groups = self._groups
        for s in self.target.scopes:
            params = [p for n in s.layers for p in groups[n]["params"]]
            count = sum(self._nnz[n] for n in s.layers)
            goal = int(round(s.nnz))
            weights = [self.optimizer.state.get(p, {}).get(L1_WEIGHT) for p in params]
            if count > s.nnz + s.tol and self._sharded:  # on the shards (l1sparse.sharded)
                removed += sharded.drop_smallest(params, weights, goal)
            elif count > s.nnz + s.tol:  # too dense: drop the smallest |w| / c
                scores = torch.cat([(p.abs() / (1 if c is None else c)).flatten()
                                    for p, c in zip(params, weights)])
                scores = torch.where(scores > 0, scores, torch.full_like(scores, -1.0))
                thr = exact_threshold(scores, goal)
                for p, c in zip(params, weights):
                    drop = (p != 0) & ((p.abs() / (1 if c is None else c)) <= thr)
                    removed += int(drop.sum())
                    p.masked_fill_(drop, 0.0)
            elif count < s.nnz - s.tol:  # too sparse: let in the zeros under most pressure
                if any(p.grad is None for p in params) or not self._grads_finite():
                    continue
                if self._sharded:
                    revived += sharded.let_in_largest(params, weights, goal - count,
                                                      self._lr(s.layers[0]))
                    continue
                scores = torch.cat([torch.where(p == 0, p.grad.abs() / (1 if c is None else c),
                                                torch.full_like(p, -1.0)).flatten()
                                    for p, c in zip(params, weights)])
                thr = exact_threshold(scores, goal - count)
                for p, c in zip(params, weights):
                    lr = self._lr(s.layers[0])
                    enter = (p == 0) & ((p.grad.abs() / (1 if c is None else c)) > thr)
                    revived += int(enter.sum())
                    p.copy_(torch.where(enter, -lr * p.grad, p))
        self.final = {"step": self.last_step, "removed": removed, "revived": revived}
        self.projections.append(dict(self.final))
        log.info("final projection: %d weights set to zero, %d let in", removed, revived)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """The scheduler's own state (plain types only; the optimizer is not included)."""
        return {"last_step": self.last_step, "skipped_steps": self.skipped_steps,
                "optimizer_steps": self._optimizer_steps,
                "l1": list(self._l1), "slope": list(self._slope), "prev": list(self._prev),
                "live_ref": {n: list(v) for n, v in self._live_ref.items()},
                "rise_blocked_until": self._rise_blocked_until,
                "window_start": self._window_start, "last_check": self._last_check,
                "last_record": self._last_record,
                "guard_events": self.guard_events, "final": self.final,
                "frozen": self.frozen, "hold_checked": self._hold_checked,
                "projections": [dict(p) for p in self.projections],
                "history": [dict(h) for h in self.history],
                "target": self.target.echo(), "total_steps": self.total_steps}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`; the target and ``total_steps`` must match."""
        if state.get("target") != self.target.echo() or state.get("total_steps") != \
                self.total_steps:
            raise ValueError("The scheduler state belongs to another target or run length "
                             f"(saved {state.get('target')}, {state.get('total_steps')} steps; "
                             f"this one {self.target.echo()}, {self.total_steps} steps).")
        self.last_step = int(state["last_step"])
        self.skipped_steps = int(state["skipped_steps"])
        self._optimizer_steps = self._seen_optimizer_steps = int(state["optimizer_steps"])
        self._l1 = [float(v) for v in state["l1"]]
        self._slope = [float(v) for v in state["slope"]]
        self._prev = [None if v is None else int(v) for v in state["prev"]]
        self._live_ref = {n: (int(v[0]), int(v[1])) for n, v in state["live_ref"].items()}
        self._rise_blocked_until = int(state["rise_blocked_until"])
        self._window_start = int(state["window_start"])
        self._last_check = int(state["last_check"])
        self._last_record = int(state["last_record"])
        self.guard_events = int(state["guard_events"])
        self.final = state["final"]
        # the masks of kept zeros live in the optimizer's state, saved with it
        self.frozen = bool(state.get("frozen", False))
        self.projections = [dict(p) for p in state.get("projections", [])]
        self._hold_checked = bool(state.get("hold_checked", self.last_step > self.hold
                                            * self.total_steps))
        self.history = [dict(h) for h in state["history"]]
        self._write_l1()
        self._nnz = self._count()

    def __repr__(self) -> str:
        shown = ", ".join(self._names[:4]) + (", ..." if len(self._names) > 4 else "")
        return (f"SparsityScheduler({self.target.words()}, step {self.last_step}/"
                f"{self.total_steps}, penalty={self.penalty!r}, "
                f"tensors=[{shown}] ({len(self._names)}))")
