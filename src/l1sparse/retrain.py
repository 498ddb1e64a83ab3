"""The retrain schemes: a full training at a fixed λ per outer iteration, all from the same
initial weights, with a pure update rule between trainings (docs/design.md §4).

Each outer iteration restores the initial weights, builds a fresh proximal optimizer
(:class:`~l1sparse.prox.ProxSGD` or :class:`~l1sparse.prox.ProxAdam`) at the λ_k of the
iteration and trains with the library's one loop (:func:`~l1sparse.train.train_steps`), the same
mini-batch order every time. A training ends at its epoch budget or, as the paper's authors ran
it, the moment the nonzero count enters the tolerance (checked after every proximal step). Then
the full-data gradient magnitudes ``γ_j = |∂L/∂w_j|`` at the trained weights and the counts of
all runs so far give the next λ through a pure function of :mod:`l1sparse.rule`:

``rule="paper"``
    The paper's own bracketed-median rule (``PAPER.md``). Two trainings bracket the target: a
    large λ (expected too sparse) and λ = 1e-7 per sample (expected too dense); a side that does
    not bracket is widened by ``widen`` at most ``max_widen`` times, then :class:`BracketError`
    names the counts. After that the next λ is the median of the γ strictly inside the bracket
    of the closest runs below and above the target (:func:`~l1sparse.rule.paper_next_lambda`),
    per layer for a per-layer target. The γ is a clean full-data gradient; the authors' code
    adds it to the last training step's gradient (about twice as large in full batch).
``rule="sorted"``
    The sorted-gradient rule of the group's sibling paper (:func:`~l1sparse.rule.propose`),
    started from the first-order guess at the initial weights.

A per-layer target may be met when ``layers_required`` of its K layers are within their
tolerance (the paper's "3 of 4 layers"). Everything is plain ℓ1. λ is reported on both scales:
summed over samples (the library's, docs/design.md §1) and per sample (λ/N, the authors').

Data-parallel training (``shard=(rank, world_size)`` under an initialised process group) wraps
the network in ``DistributedDataParallel`` and all-reduces the full-data gradient, as
:mod:`l1sparse.distributed` does; every rank then takes the same decisions. A checkpoint after
every training lets a selection resume by replaying the recorded trainings.

(A little over 500 lines: the outer loop, its records and its checkpoint replay share state and
read best together.)
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn

from .characterize import full_gradient
from .losses import check_task, metric
from .penalty import penalised_layers
from .rule import Bracket, first_order_guess, paper_next_lambda, propose
from .targets import Target, make_target
from .train import batches_per_epoch, make_optimizer, train_steps

__all__ = ["RULES", "BracketError", "RetrainRecord", "RetrainResult", "retrain_select",
           "paper_start"]

log = logging.getLogger(__name__)

RULES = ("paper", "sorted")
LAM_LOW = 1e-7  # the paper's dense end, per sample


class BracketError(ValueError):
    """The large-λ and small-λ trainings did not bracket the target, even after widening.

    ``history`` holds the records of the trainings done.
    """

    def __init__(self, message: str, history: list) -> None:
        super().__init__(message)
        self.history = history


class _Entered(Exception):
    """Raised from the step callback to end a training that entered the tolerance."""


@dataclass
class RetrainRecord:
    """One outer iteration: one full training at fixed λ_k from the initial weights."""

    iteration: int
    phase: str  # "high", "low" (bracketing, "+widen" when widened) or "update"
    lambdas: dict[str, float]  # summed scale
    lambdas_mean: dict[str, float]  # per sample, λ/N: the scale the authors report
    nnz: dict[str, int]
    nnz_total: int
    met: bool
    stopped: str  # "tolerance" (entered it) or "budget"
    epochs: float
    loss: float  # mean fidelity over the training set at the end (MSE / cross-entropy)
    metric: float  # training MSE or accuracy
    test_metric: float  # on ``eval_data``; NaN without
    seconds: float

    def as_row(self) -> dict:
        row = {k: v for k, v in asdict(self).items()
               if k not in ("lambdas", "lambdas_mean", "nnz")}
        for name in self.lambdas:
            row[f"lambda_{name}"] = self.lambdas[name]
            row[f"lambda_mean_{name}"] = self.lambdas_mean[name]
        for name, count in self.nnz.items():
            row[f"nnz_{name}"] = count
        return row


@dataclass
class RetrainResult:
    """The outcome of :func:`retrain_select`; the model is left at the returned run."""

    rule: str
    lambdas: dict[str, float]  # summed scale, of the returned run
    lambdas_mean: dict[str, float]  # per sample
    target: Target
    layers_required: int
    converged: bool
    nnz: dict[str, int]
    history: list[RetrainRecord] = field(default_factory=list)
    epochs_total: float = 0.0
    seconds: float = 0.0

    @property
    def trainings(self) -> int:
        """Outer iterations: full trainings from the initial weights."""
        return len(self.history)

    def to_selection(self):
        """The same outcome as a :class:`~l1sparse.select.SelectionResult` (what
        :func:`~l1sparse.select.fit_sparse` returns)."""
        from .select import OuterRecord, SelectionResult

        history = [OuterRecord(
            iteration=r.iteration, phase=r.phase, lambdas=dict(r.lambdas), nnz=dict(r.nnz),
            nnz_total=r.nnz_total, attained=self.target.attained(r.nnz), met=r.met,
            loss=r.loss * _n(r), objective=float("nan"), max_violation=float("nan"),
            epochs=r.epochs, seconds=r.seconds) for r in self.history]
        return SelectionResult(
            lambdas=dict(self.lambdas), target=self.target, converged=self.converged,
            distance=self.target.distance(self.nnz), nnz=dict(self.nnz), history=history,
            epochs_total=self.epochs_total, seconds=self.seconds, penalty="l1")


def _n(record: RetrainRecord) -> float:
    """N recovered from a record's two λ scales (the loss is stored per sample)."""
    name = next(iter(record.lambdas))
    mean = record.lambdas_mean[name]
    return record.lambdas[name] / mean if mean > 0 else float("nan")


def paper_start(task: str, per_layer: bool) -> tuple[float, float]:
    """The paper's bracketing λ per sample, ``(large, small)``: 1e-3 for regression and 1e-2
    for classification with one λ, 1e-3 and 1e-4 per layer; the small end is 1e-7.

    >>> paper_start("regression", False), paper_start("classification", True)
    ((0.001, 1e-07), (0.0001, 1e-07))
    """
    check_task(task)
    if per_layer:
        return (1e-3 if task == "regression" else 1e-4), LAM_LOW
    return (1e-3 if task == "regression" else 1e-2), LAM_LOW


def _positive(value, what: str, *, integer: bool = False, above_one: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 1 if above_one else value > 0) and (not integer or int(value) == value)
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = "> 1" if above_one else "> 0"
        raise ValueError(f"The '{what}' parameter must be {kind} {bound}. Got {value!r}.")


def retrain_select(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    task: str,
    target: Target | None = None,
    nnz: int | None = None,
    zero_fraction: float | None = None,
    layer_nnz=None,
    layer_zero_fraction=None,
    tol: float | None = None,
    rel_tol: float | None = None,
    layers_required: int | None = None,
    rule: str = "paper",
    epochs_per_training: float,
    batch_size: int | None = None,
    lr: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    lr_final: float | None = None,
    seed: int = 0,
    max_trainings: int = 30,
    start: tuple[float, float] | None = None,
    widen: float = 10.0,
    max_widen: int = 3,
    stop_on_entry: bool = True,
    eval_data: tuple[Tensor, Tensor] | None = None,
    callback: Callable[[RetrainRecord], None] | None = None,
    shard: tuple[int, int] | None = None,
    grad_batch_size: int = 8192,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    device: str | torch.device | None = None,
) -> RetrainResult:
    """Choose λ (or every λ_k) by full trainings from the same initial weights.

    Minimises ``L(Θ) + Σ_k λ_k ‖W_k‖₁`` (``L`` summed over samples) at each λ tried, with
    proximal SGD (the paper: ``lr`` 0.1, no momentum, constant rate) or ProxAdam, and updates λ
    between trainings by ``rule`` until a training ends inside the tolerance.

    Parameters
    ----------
    model : nn.Module
        Trained in place; its weights on entry are the initial weights of every training, and on
        return those of the run that met the target (else the closest run).
    X, y : Tensor
        Training data (float targets for regression, class indices for classification).
    task : {"regression", "classification"}
    target, nnz, zero_fraction, layer_nnz, layer_zero_fraction, tol :
        The target, as for :func:`~l1sparse.targets.make_target` (``tol`` in weights for
        counts); ``target`` wins.
    rel_tol : float, optional
        A tolerance relative to each scope's target count, ``|nnz_k − T_k| ≤ rel_tol·T_k``
        (the paper: 0.001 with one λ, 0.05 or 0.1 per layer); replaces ``tol``.
    layers_required : int, optional
        A per-layer target is met when this many layers are within their tolerance (default:
        all). The paper's regression asks 3 of 4.
    rule : {"paper", "sorted"}
        The paper's bracketed-median rule, or the sorted-gradient rule (module docstring).
    epochs_per_training : float
        The epoch budget of one training (the paper: 50,000 full-batch, 200 mini-batch).
    batch_size : int, optional
        ``None`` (default) for full-batch proximal gradient.
    lr, optimizer, momentum :
        ``"sgd"`` (:class:`~l1sparse.prox.ProxSGD`) or ``"adam"``; the paper's 0.1, plain SGD.
    lr_final : float, optional
        ``None`` (default, the paper): a constant learning rate. A number: a cosine decay over
        the training's budget down to ``lr · lr_final``.
    seed : int
        The mini-batch order, the same in every training.
    max_trainings : int, default 30
        The most trainings in all (bracketing included).
    start : (float, float), optional
        Paper rule: the bracketing λ **per sample**, ``(large, small)``; default
        :func:`paper_start`.
    widen, max_widen : float and int, default 10 and 3
        A bracketing run on the wrong side has its λ multiplied (large end) or divided (small
        end) by ``widen``, at most ``max_widen`` times per end.
    stop_on_entry : bool, default True
        End a training as soon as the target is met (after any step), as the paper does.
    eval_data : (X_test, y_test), optional
        Measured after each training (``test_metric`` of the records).
    callback : callable, optional
        Called with every :class:`RetrainRecord`.
    shard : (rank, world_size), optional
        Data-parallel training in an initialised process group (module docstring).
    grad_batch_size : int
        Batch size of the full-data gradient pass.
    checkpoint : callable, optional
        Called after every training with a dict of plain types and tensors (the records, the
        initial weights, the returned run's weights, the last γ, the sorted rule's brackets).
    resume : dict, optional
        A dict from ``checkpoint``: the trainings it records are replayed without training
        (the rules are deterministic given the counts and the last γ), then the selection goes
        on exactly as an uninterrupted one would.
    device : str or torch.device, optional
        Where the model and all data live for the whole selection.

    Returns
    -------
    RetrainResult
        ``lambdas`` (summed) and ``lambdas_mean`` (per sample) of the returned run,
        ``converged``, ``nnz``, one :class:`RetrainRecord` per training, ``epochs_total``.

    Raises
    ------
    ValueError
        For bad parameters, or a per-layer target of the wrong length or with an unknown
        layer name (the message names the layers).
    BracketError
        If ``rule="paper"`` cannot bracket the target after ``max_widen`` widenings.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(64, 3, generator=g); y = X[:, :1] - 0.5 * X[:, 1:2]
    >>> res = retrain_select(mlp(3, [8], 1, seed=0), X, y, task="regression", nnz=6, tol=1,
    ...                      epochs_per_training=300)
    >>> res.converged, abs(sum(res.nnz.values()) - 6) <= 1
    (True, True)
    """
    check_task(task)
    if rule not in RULES:
        raise ValueError(f"The 'rule' parameter must be one of {list(RULES)}. Got {rule!r}.")
    _positive(epochs_per_training, "epochs_per_training")
    _positive(max_trainings, "max_trainings", integer=True)
    _positive(widen, "widen", above_one=True)
    if isinstance(max_widen, bool) or int(max_widen) != max_widen or max_widen < 0:
        raise ValueError(f"The 'max_widen' parameter must be an integer >= 0. Got {max_widen!r}.")
    if target is None:
        target = make_target(model, nnz=nnz, zero_fraction=zero_fraction, layer_nnz=layer_nnz,
                             layer_zero_fraction=layer_zero_fraction, tol=tol)
    if rel_tol is not None:
        if not (isinstance(rel_tol, (int, float)) and 0 <= rel_tol < 1):
            raise ValueError(f"The 'rel_tol' parameter must be in [0, 1). Got {rel_tol!r}.")
        target = replace(target, scopes=tuple(replace(s, tol=rel_tol * s.nnz)
                                              for s in target.scopes))
    k_scopes = len(target.scopes)
    required = k_scopes if layers_required is None else layers_required
    if isinstance(required, bool) or int(required) != required or not 1 <= required <= k_scopes:
        raise ValueError(f"The 'layers_required' parameter must be an integer in [1, "
                         f"{k_scopes}] (the target's scopes). Got {layers_required!r}.")
    if start is None:
        start = paper_start(task, target.per_layer)
    if len(start) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in start) \
            or start[0] <= start[1]:
        raise ValueError(f"The 'start' parameter must be (large, small) per-sample λ with "
                         f"large > small > 0. Got {start!r}.")

    if device is not None:
        model.to(device)
        X, y = X.to(device), y.to(device)
        if eval_data is not None:
            eval_data = (eval_data[0].to(device), eval_data[1].to(device))
    n = X.shape[0]
    per_epoch = batches_per_epoch(n, batch_size)
    budget = max(1, round(float(epochs_per_training) * per_epoch))
    if resume is not None and (resume.get("format") != "retrain-1" or resume["rule"] != rule
                               or resume["scopes"] != len(target.scopes)):
        raise ValueError("The 'resume' checkpoint is not from retrain_select with this rule "
                         f"and target ({rule!r}, {len(target.scopes)} scopes).")
    initial = copy.deepcopy(model.state_dict() if resume is None else resume["initial"])
    replay = [] if resume is None else [RetrainRecord(**r) for r in resume["history"]]
    rank, world = shard if shard is not None else (0, 1)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [X.device.index] if X.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    weights = [(s, [m.weight for name, m in penalised_layers(model) if name in s.layers])
               for s in target.scopes]

    def counts() -> list[int]:
        with torch.no_grad():
            per = torch.stack([sum(torch.count_nonzero(w) for w in ws) for _, ws in weights])
        return [int(c) for c in per.tolist()]

    def met(scope_counts) -> bool:
        inside = sum(abs(c - s.nnz) <= s.tol + 1e-9 for c, s in zip(scope_counts,
                                                                    target.scopes))
        return inside >= required

    def gradient() -> tuple[list[Tensor], float]:
        """Per scope, the full-data |∂L/∂w| (summed loss); and the mean loss."""
        model.eval()
        grad = full_gradient(model, X[rank::world], y[rank::world], task=task,
                             batch_size=grad_batch_size)
        loss = grad.loss
        if world > 1:
            import torch.distributed as dist

            for g in grad.weights.values():
                dist.all_reduce(g, op=dist.ReduceOp.SUM)
            total = torch.tensor([loss], dtype=torch.float64, device=X.device)
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            loss = float(total)
        gammas = [torch.cat([grad.weights[name].abs().flatten() for name in s.layers])
                  for s in target.scopes]
        return gammas, loss / n

    history: list[RetrainRecord] = []
    runs: list[list[tuple[float, int]]] = [[] for _ in target.scopes]  # per scope (λ, count)
    best: dict = {}
    if resume is not None:
        best.update(met=resume["best_met"], distance=resume["best_distance"],
                    record=replay[resume["best_index"]], state=resume["best_state"])
    brackets = [Bracket() for _ in target.scopes]  # the sorted rule's state
    t_start = time.perf_counter() - (0.0 if resume is None else resume["seconds"])

    def replayed(phase: str) -> tuple[RetrainRecord, list[Tensor] | None]:
        """The next recorded training of ``resume``, and the last γ after the last one."""
        record = replay[len(history)]
        history.append(record)
        for r, s in zip(runs, target.scopes):
            r.append((record.lambdas[s.layers[0]], sum(record.nnz[k] for k in s.layers)))
        if len(history) < len(replay):
            return record, None
        brackets[:] = [Bracket(**b) for b in resume["brackets"]]
        return record, [g.clone() for g in resume["gammas"]]

    def save(gammas: list[Tensor]) -> None:
        checkpoint({"format": "retrain-1", "rule": rule, "scopes": len(target.scopes),
                    "history": [asdict(r) for r in history], "initial": initial,
                    "best_met": best["met"], "best_distance": best["distance"],
                    "best_index": history.index(best["record"]), "best_state": best["state"],
                    "gammas": gammas, "brackets": [asdict(b) for b in brackets],
                    "seconds": time.perf_counter() - t_start})

    def next_lams(compute) -> list[float]:
        """The λ per scope of the next training: recorded when replaying, else ``compute()``."""
        if len(history) < len(replay):
            return [replay[len(history)].lambdas[s.layers[0]] for s in target.scopes]
        return compute()

    def train_at(scope_lams: list[float], phase: str) -> tuple[RetrainRecord, list[Tensor]]:
        if len(history) < len(replay):
            return replayed(phase)
        t0 = time.perf_counter()
        lams = {name: lam for s, lam in zip(target.scopes, scope_lams) for name in s.layers}
        model.load_state_dict(initial)
        opt = make_optimizer(model, optimizer, lr=lr, lambdas=lams, n_samples=n,
                             momentum=momentum)
        sched = None
        if lr_final is not None:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_final + (1 - lr_final)
                                                      * 0.5 * (1 + math.cos(math.pi * min(
                                                          1.0, s / budget))))
        state = {"steps": 0}

        def after_step() -> None:
            state["steps"] += 1
            if sched is not None:
                sched.step()
            if stop_on_entry and met(counts()):
                raise _Entered

        stopped = "budget"
        try:
            train_steps(net, (X, y), opt, task=task, steps=budget, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(seed), after_step=after_step,
                        shard=shard)
        except _Entered:
            stopped = "tolerance"
        gammas, loss = gradient()
        c = counts()
        for r, lam, cnt in zip(runs, scope_lams, c):
            r.append((lam, cnt))
        nnz_now = {name: int(torch.count_nonzero(m.weight)) for name, m in
                   penalised_layers(model)}
        test = (metric(model, eval_data[0], eval_data[1], task) if eval_data is not None
                else float("nan"))
        record = RetrainRecord(
            iteration=len(history) + 1, phase=phase, lambdas=lams,
            lambdas_mean={k: v / n for k, v in lams.items()}, nnz=nnz_now,
            nnz_total=sum(nnz_now.values()), met=met(c), stopped=stopped,
            epochs=state["steps"] / per_epoch, loss=loss, metric=metric(model, X, y, task),
            test_metric=test, seconds=time.perf_counter() - t0)
        history.append(record)
        dist_now = sum(target.distance(nnz_now))
        if not best or record.met > best["met"] or (record.met == best["met"]
                                                    and dist_now < best["distance"]):
            best.update(met=record.met, distance=dist_now, record=record,
                        state=copy.deepcopy(model.state_dict()))
        log.info("training %d (%s): lambda/N=%s nnz=%s epochs=%g %s", record.iteration, phase,
                 ",".join(f"{v:.4g}" for v in record.lambdas_mean.values()), c, record.epochs,
                 "met" if record.met else "")
        if callback is not None:
            callback(record)
        if checkpoint is not None:
            save(gammas)
        return record, gammas

    def finish() -> RetrainResult:
        rec = best["record"]
        model.load_state_dict(best["state"])
        return RetrainResult(
            rule=rule, lambdas=dict(rec.lambdas), lambdas_mean=dict(rec.lambdas_mean),
            target=target, layers_required=required, converged=rec.met, nnz=dict(rec.nnz),
            history=history, epochs_total=sum(r.epochs for r in history),
            seconds=time.perf_counter() - t_start)

    def left() -> bool:
        return not history[-1].met and len(history) < max_trainings

    if rule == "paper":
        gammas = _bracket(target, runs, history, train_at, left, start, n, widen,
                          int(max_widen))
        while left():
            def paper_lams(gammas=gammas):
                return [r[-1][0] if abs(r[-1][1] - s.nnz) <= s.tol + 1e-9
                        else paper_next_lambda(r, s.nnz, g)
                        for s, r, g in zip(target.scopes, runs, gammas)]
            _, gammas = train_at(next_lams(paper_lams), "update")
        return finish()

    # the sorted-gradient rule, from the first-order guess at the initial weights
    def first_lams():
        factor = 1.0 - momentum if optimizer == "sgd" else 1.0
        return [factor * first_order_guess(g, s.nnz) if s.nnz < s.total else 0.0
                for s, g in zip(target.scopes, gradient()[0])]

    lams = next_lams(first_lams)
    memory = 4 if target.per_layer else None
    while True:
        record, gammas = train_at(lams, "update")
        if not left():
            return finish()

        def sorted_lams(gammas=gammas, lams=lams, it=record.iteration):
            return [lam if abs(r[-1][1] - s.nnz) <= s.tol + 1e-9 else propose(
                lam, r[-1][1], s.nnz, g.sort(descending=True).values, br, it,
                max_step=None, memory=memory)
                for s, r, g, br, lam in zip(target.scopes, runs, gammas, brackets, lams)]
        lams = next_lams(sorted_lams)


def _bracket(target, runs, history, train_at, left, start, n, widen, max_widen
             ) -> list[Tensor] | None:
    """The paper's two bracketing trainings, each end widened at most ``max_widen`` times;
    returns the γ of the last training (``None`` when a training already met the target)."""
    scopes = target.scopes
    gammas = None
    for end, lam0 in (("high", start[0]), ("low", start[1])):
        lams = [lam0 * n] * len(scopes)
        phase = end
        for attempt in range(max_widen + 1):
            _, gammas = train_at(lams, phase)
            if not left():
                return gammas
            counts = [r[-1][1] for r in runs]
            # the bracket needs a count at or below each target and one at or above it
            wrong = [(c > s.nnz) if end == "high" else (c < s.nnz)
                     for c, s in zip(counts, scopes)]
            if not any(wrong):
                break
            if attempt == max_widen:
                side = "sparse enough" if end == "high" else "dense enough"
                tried = "; ".join(f"lambda/N {_fmt([r[i][0] / n for r in runs])} -> "
                                  f"{_fmt([r[i][1] for r in runs])}"
                                  for i in range(len(runs[0])))
                raise BracketError(
                    f"Cannot bracket the target {target.words()}: the {end}-lambda training "
                    f"is not {side} after {max_widen} widenings by {widen:g}x (nonzeros at "
                    f"each lambda tried: {tried}).", list(history))
            factor = widen if end == "high" else 1.0 / widen
            lams = [lam * factor if w else lam for lam, w in zip(lams, wrong)]
            phase = f"{end}+widen"
    return gammas


def _fmt(values) -> str:
    text = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in values]
    return text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"
