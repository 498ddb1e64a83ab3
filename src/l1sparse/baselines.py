"""What users pick instead of ℓ1 with a chosen λ: the baselines l1sparse is measured against.

A user who wants "this network with 95 % zero weights" usually does one of

* **prune and fine-tune**: train dense, zero the weights of smallest magnitude over the whole
  network (:func:`magnitude_prune`, global unstructured ℓ1-magnitude pruning from
  :mod:`torch.nn.utils.prune`), then fine-tune the survivors with the zeros kept
  (:func:`prune_and_finetune`);
* **gradual magnitude pruning** (Zhu & Gupta, 2017): prune during training along a cubic
  schedule of the zero fraction, the masks fixed between pruning steps
  (:func:`gradual_magnitude_pruning`);
* **a grid of λ**: one full ℓ1 training per λ, keep the run whose zero fraction is closest to
  the target (:func:`lambda_grid_search`).

All of them count sparsity over the penalised weights (``nn.Linear`` / ``nn.Conv*`` weights,
biases excluded), as zero fractions, with exact zeros, like the rest of the library. Every
function returns a :class:`BaselineResult`: the final model, the attained zero fraction, the
cost in epochs and in full trainings, and the wall time. Training uses the library's own loop
and optimizers (:class:`~l1sparse.prox.ProxSGD` / :class:`~l1sparse.prox.ProxAdam` with the same
cosine learning-rate decay as the retrain schemes (:mod:`l1sparse.retrain`), and the same default
optimizer, learning rate and momentum as :func:`~l1sparse.select.fit_sparse`), so a comparison with
:func:`~l1sparse.select.fit_sparse` measures the choice of sparsity pattern, not a different
optimizer.

(About 650 lines: every baseline here trains through the same loop with the same
validation of its arguments and returns the same :class:`BaselineResult`; torch.ao.pruning's
sparsifier is apart, in :mod:`l1sparse.baselines_ao`.)
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .losses import check_task
from .penalty import layer_names, penalised_layers
from .config import DEFAULTS
from .select import check_fraction as _check_fraction
from .sparsity import nnz_per_layer
from .train import DivergenceError, batches_per_epoch, debias, make_optimizer, train_steps

__all__ = [
    "BaselineResult",
    "GridRun",
    "GridSearchResult",
    "magnitude_prune",
    "prune_and_finetune",
    "gmp_schedule",
    "gradual_magnitude_pruning",
    "lambda_grid_search",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- records


@dataclass
class BaselineResult:
    """The outcome of one baseline.

    Attributes
    ----------
    method : str
        Short name of the baseline.
    model : nn.Module
        The final (sparse) model.
    target : float
        The zero fraction asked for.
    zero_fraction : float
        The attained share of exactly zero penalised weights.
    nnz, total : int
        Nonzero and total penalised weights of ``model``.
    epochs : int
        Length of one full training (the unit of ``trainings``); 0 for pruning alone.
    epochs_total : int
        Epochs trained in all, every phase included.
    seconds : float
        Wall time of the whole procedure (training, pruning, fine-tuning).
    details : dict
        Method-specific extras (λ chosen, pruning steps, …).
    """

    method: str
    model: nn.Module = field(repr=False)
    target: float
    zero_fraction: float
    nnz: int
    total: int
    epochs: int
    epochs_total: int
    seconds: float
    details: dict = field(default_factory=dict)

    @property
    def trainings(self) -> float:
        """Number of full trainings run: ``epochs_total / epochs`` (0 without training)."""
        return self.epochs_total / self.epochs if self.epochs else 0.0

    @property
    def distance(self) -> float:
        """``|attained − target|`` as a fraction (multiply by 100 for percentage points)."""
        return abs(self.zero_fraction - self.target)


@dataclass
class GridRun:
    """One λ of a grid search: the full training at that λ and what it gave."""

    lam: float  # summed scale
    nnz: int
    zero_fraction: float
    seconds: float
    state: dict | None = field(default=None, repr=False)  # the trained weights


@dataclass
class GridSearchResult(BaselineResult):
    """:class:`BaselineResult` of :func:`lambda_grid_search`, with every run of the grid."""

    runs: list[GridRun] = field(default_factory=list)
    model_factory: Callable[[], nn.Module] | None = field(default=None, repr=False)

    @property
    def lam(self) -> float:
        """The chosen λ (summed scale)."""
        return self.details["lambda"]

    def select(self, zero_fraction: float) -> "GridSearchResult":
        """The same grid, judged against another target: no training, the same cost.

        A λ grid does not depend on the target, so one grid serves every target; the cost
        (``seconds``, ``epochs_total``) of the grid is charged in full to each.

        Raises
        ------
        ValueError
            If ``zero_fraction`` is outside ``[0, 1)`` or the runs' weights were not kept
            (``keep_states=False``).
        """
        target = _check_fraction(zero_fraction, "zero_fraction")
        if self.model_factory is None or any(r.state is None for r in self.runs):
            raise ValueError("The grid's trained weights were not kept; run lambda_grid_search "
                             "with keep_states=True to judge it against other targets.")
        best = _closest(self.runs, target)
        model = self.model_factory()
        model.load_state_dict(best.state)
        return _grid_result(self, model, best, target)


# --------------------------------------------------------------------------- validation


def _check_int(value, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < low:
        raise ValueError(f"The '{what}' parameter must be an integer >= {low}. Got {value!r}.")
    return int(value)


def _check_model(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = penalised_layers(model)
    if not layers:
        raise ValueError("The model has no penalisable layer (nn.Linear or nn.Conv*).")
    return layers


def _sparsity(model: nn.Module) -> tuple[int, int]:
    nnz = sum(nnz_per_layer(model).values())
    total = sum(m.weight.numel() for _, m in penalised_layers(model))
    return nnz, total


def _dense_training(model: nn.Module, X: Tensor, y: Tensor, *, task: str, epochs: int,
                    optimizer: str, lr: float, momentum: float, batch_size: int | None,
                    seed: int, device) -> None:
    """``epochs`` epochs without penalty, with the retrain schemes' schedule and batch order."""
    _train_fixed(model, X, y, task=task, lam=0.0, epochs=epochs, optimizer=optimizer, lr=lr,
                 momentum=momentum, batch_size=batch_size, seed=seed, device=device)


def _train_fixed(model: nn.Module, X: Tensor, y: Tensor, *, task: str, lam: float, epochs: int,
                 optimizer: str, lr: float, momentum: float, batch_size: int | None,
                 seed: int, device) -> None:
    """One training at a fixed λ (all layers) with the library's loop, as one training of
    :func:`l1sparse.retrain.retrain_select`: mini-batches with a cosine decay of the learning
    rate to ``lr · DEFAULTS.lr_final`` over the run, full batch at a constant rate."""
    if device is not None:
        model.to(device)
        X, y = X.to(device), y.to(device)
    n = X.shape[0]
    budget = max(1, round(epochs * batches_per_epoch(n, batch_size)))
    opt = make_optimizer(model, optimizer, lr=lr,
                         lambdas={name: lam for name, _ in penalised_layers(model)},
                         n_samples=n, momentum=momentum)
    after_step = None
    if batch_size is not None:
        final = DEFAULTS.lr_final
        after_step = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(
                1.0, s / budget)))).step
    train_steps(model, (X, y), opt, task=task, steps=budget, batch_size=batch_size,
                generator=torch.Generator().manual_seed(seed), after_step=after_step)


# --------------------------------------------------------------------------- (i) prune


def magnitude_prune(model: nn.Module, zero_fraction: float) -> BaselineResult:
    """Zero the ``round(zero_fraction · total)`` penalised weights of smallest magnitude.

    Global unstructured pruning over all penalised weights together
    (``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``), made permanent at
    once with ``prune.remove``: the model keeps plain parameters (the same ``Parameter``
    objects) that hold exact zeros, and no masks or hooks.

    Parameters
    ----------
    model : nn.Module
        Pruned in place.
    zero_fraction : float
        Share of the penalised weights to zero, in ``[0, 1)``.

    Returns
    -------
    BaselineResult
        With ``epochs = epochs_total = 0``. Weights that were already zero count among the
        smallest, so a model with more zeros than asked keeps them (attained ≥ target).

    Raises
    ------
    ValueError
        If ``zero_fraction`` is outside ``[0, 1)`` or the model has no penalisable layer.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> net = mlp(20, [10], 5, seed=0)
    >>> res = magnitude_prune(net, 0.9)
    >>> res.nnz, res.total
    (25, 250)
    """
    target = _check_fraction(zero_fraction, "zero_fraction")
    layers = _check_model(model)
    t0 = time.perf_counter()
    total = sum(m.weight.numel() for _, m in layers)
    amount = int(round(target * total))
    if amount > 0:
        pairs = [(m.module, m.attr) for _, m in layers]
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=amount)
        for m, name in pairs:
            prune.remove(m, name)
    nnz, total = _sparsity(model)
    return BaselineResult("magnitude prune", model, target, 1 - nnz / total, nnz, total,
                          epochs=0, epochs_total=0, seconds=time.perf_counter() - t0,
                          details={"pruned": amount})


def prune_and_finetune(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    task: str,
    zero_fraction: float,
    epochs: int = DEFAULTS.epochs,
    finetune_epochs: int = 2,
    optimizer: str = DEFAULTS.optimizer,
    lr: float = DEFAULTS.lr_sgd,
    momentum: float = DEFAULTS.momentum,
    finetune_optimizer: str | None = None,
    finetune_lr: float | None = None,
    batch_size: int | None = DEFAULTS.batch_size,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> BaselineResult:
    """Train dense, prune by global magnitude, fine-tune with the zeros kept.

    1. ``epochs`` epochs without penalty (the optimizer and cosine learning-rate decay of
       the retrain schemes (:mod:`l1sparse.retrain`));
    2. :func:`magnitude_prune` to ``zero_fraction``;
    3. ``finetune_epochs`` epochs of :func:`~l1sparse.train.debias`: the surviving weights are
       trained at the constant rate ``finetune_lr`` with the support fixed.

    Parameters
    ----------
    model : nn.Module
        Trained in place from its current weights.
    X, y : Tensor
        Training data.
    task : {"regression", "classification"}
    zero_fraction : float
        Target share of zero penalised weights, in ``[0, 1)``.
    epochs : int, default 20
        Dense training length (one full training).
    finetune_epochs : int, default 2
        Fine-tuning length; 0 for pruning without fine-tuning.
    optimizer : {"sgd", "adam"}, default "sgd"
        Optimizer of the dense phase (the defaults are those of
        :func:`~l1sparse.select.fit_sparse`).
    lr : float, default 0.1
    momentum : float, default 0.9
        For ``optimizer="sgd"`` in the dense phase.
    finetune_optimizer : {"sgd", "adam"}, optional
        Optimizer of the fine-tuning (no momentum). Default ``optimizer``.
    finetune_lr : float, optional
        Default ``lr``. (On LeNet-300-100 / Fashion-MNIST with Adam, fine-tuning for a couple
        of epochs at ``lr / 10`` recovered far less accuracy than at ``lr``, most of all at high
        sparsity.)
    batch_size : int or None, default 128
        ``None`` for full batch.
    seed : int, default 0
        Seeds the mini-batch order of both phases.
    device : str or torch.device, optional

    Returns
    -------
    BaselineResult
        ``epochs_total = epochs + finetune_epochs``.

    Raises
    ------
    ValueError
        For a zero fraction outside ``[0, 1)``, a bad task, or negative epoch counts.
    """
    target = _check_fraction(zero_fraction, "zero_fraction")
    check_task(task)
    epochs = _check_int(epochs, "epochs", 1)
    finetune_epochs = _check_int(finetune_epochs, "finetune_epochs", 0)
    _check_model(model)
    t0 = time.perf_counter()
    _dense_training(model, X, y, task=task, epochs=epochs, optimizer=optimizer, lr=lr,
                    momentum=momentum, batch_size=batch_size, seed=seed, device=device)
    t_dense = time.perf_counter() - t0
    magnitude_prune(model, target)
    if finetune_epochs:
        dev = next(model.parameters()).device
        debias(model, X.to(dev), y.to(dev), task=task, epochs=finetune_epochs,
               lr=lr if finetune_lr is None else finetune_lr,
               optimizer=optimizer if finetune_optimizer is None else finetune_optimizer,
               batch_size=batch_size, generator=torch.Generator().manual_seed(seed + 1))
    nnz, total = _sparsity(model)
    return BaselineResult("prune + fine-tune", model, target, 1 - nnz / total, nnz, total,
                          epochs=epochs, epochs_total=epochs + finetune_epochs,
                          seconds=time.perf_counter() - t0,
                          details={"dense_seconds": t_dense})


# --------------------------------------------------------------------------- (ii) GMP


def gmp_schedule(step: int, *, initial: float, final: float, begin: int, end: int) -> float:
    """Zero fraction at ``step`` of the cubic schedule of Zhu & Gupta (2017).

    .. math::

        s_t = s_f + (s_i - s_f)\\,\\Big(1 - \\frac{t - t_0}{t_1 - t_0}\\Big)^3,
        \\qquad t_0 \\le t \\le t_1,

    ``s_i`` before ``t_0`` and ``s_f`` after ``t_1``: fast pruning while many redundant weights
    remain, slower as fewer are left.

    >>> gmp_schedule(0, initial=0.0, final=0.9, begin=0, end=10)
    0.0
    >>> gmp_schedule(10, initial=0.0, final=0.9, begin=0, end=10)
    0.9
    """
    if step <= begin:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1 - (step - begin) / (end - begin)) ** 3


@torch.no_grad()
def _global_masks(weights: list[Tensor], zero_fraction: float) -> list[Tensor]:
    """Masks keeping the ``total − round(zero_fraction · total)`` largest |w| over all tensors."""
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    keep = flat.numel() - int(round(zero_fraction * flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return [m.view_as(w) for m, w in zip(mask.split([w.numel() for w in weights]), weights)]


def gradual_magnitude_pruning(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    task: str,
    zero_fraction: float,
    epochs: int = DEFAULTS.epochs,
    initial_fraction: float = 0.0,
    begin: float = 0.0,
    end: float = 0.7,
    frequency: int = 100,
    optimizer: str = DEFAULTS.optimizer,
    lr: float = DEFAULTS.lr_sgd,
    lr_final: float = DEFAULTS.lr_final,
    momentum: float = DEFAULTS.momentum,
    batch_size: int | None = DEFAULTS.batch_size,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> BaselineResult:
    """Gradual magnitude pruning during one training run (Zhu & Gupta, 2017).

    The zero fraction follows :func:`gmp_schedule` from ``initial_fraction`` at step
    ``begin · T`` to ``zero_fraction`` at step ``end · T`` (``T`` = all optimizer steps of the
    run). Every ``frequency`` steps in that window, and once more at its last step, the masks
    are recomputed by global magnitude over all penalised weights; between prunes the masks are
    fixed: the gradients of pruned weights are zeroed and the weights re-masked after each step,
    so they stay exact zeros. After ``end · T`` the network trains on with the final mask, the
    learning rate following the same cosine decay (to ``lr · lr_final``) as the retrain
    schemes (:mod:`l1sparse.retrain`). The final zero fraction is ``zero_fraction`` up to
    rounding (one weight).

    Parameters
    ----------
    model : nn.Module
        Trained in place.
    X, y : Tensor
        Training data.
    task : {"regression", "classification"}
    zero_fraction : float
        Final share of zero penalised weights, in ``[0, 1)``.
    epochs : int, default 20
    initial_fraction : float, default 0
        ``s_i``, in ``[0, zero_fraction]``.
    begin, end : float, default 0 and 0.7
        Start and end of the pruning window as fractions of the run, ``0 ≤ begin < end ≤ 1``.
    frequency : int, default 100
        Optimizer steps between prunes.
    optimizer : {"sgd", "adam"}, default "sgd"
        Used without penalty (``l1 = 0``); the defaults are those of
        :func:`~l1sparse.select.fit_sparse`.
    lr, lr_final : float, default 0.1 and 0.05
        Initial learning rate and the final fraction of it reached by the cosine decay.
    momentum : float, default 0.9
    batch_size : int or None, default 128
    seed : int, default 0
        Seeds the mini-batch order.
    device : str or torch.device, optional

    Returns
    -------
    BaselineResult
        ``epochs_total = epochs`` (one training); ``details`` has the number of prunes.

    Raises
    ------
    ValueError
        For a zero fraction outside ``[0, 1)``, ``initial_fraction`` outside
        ``[0, zero_fraction]``, a window that is not ``0 ≤ begin < end ≤ 1``, or non-positive
        ``epochs``/``frequency``.
    DivergenceError
        If the loss becomes NaN or infinite.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(256, 10, generator=g); y = (X[:, 0] > 0).long()
    >>> res = gradual_magnitude_pruning(mlp(10, [32], 2, seed=0), X, y, task="classification",
    ...                                 zero_fraction=0.8, epochs=4, frequency=4, lr=1e-2)
    >>> res.nnz, res.total
    (77, 384)
    """
    target = _check_fraction(zero_fraction, "zero_fraction")
    check_task(task)
    epochs = _check_int(epochs, "epochs", 1)
    frequency = _check_int(frequency, "frequency", 1)
    s_init = _check_fraction(initial_fraction, "initial_fraction")
    if s_init > target:
        raise ValueError("The 'initial_fraction' parameter must be in [0, zero_fraction] = "
                         f"[0, {target}]. Got {s_init}.")
    begin, end = float(begin), float(end)
    if not (0.0 <= begin < end <= 1.0):
        raise ValueError("The 'begin' and 'end' parameters must satisfy 0 <= begin < end <= 1. "
                         f"Got begin={begin}, end={end}.")
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    layers = _check_model(model)

    t_start = time.perf_counter()
    if device is not None:
        model.to(device)
        X, y = X.to(device), y.to(device)
    n = X.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    per_epoch = math.ceil(n / bs)
    total_steps = epochs * per_epoch
    t_begin, t_end = round(begin * total_steps), max(1, round(end * total_steps))
    t_begin = min(t_begin, t_end - 1)
    opt = make_optimizer(model, optimizer, lr=lr, lambdas={n_: 0.0 for n_ in layer_names(model)},
                         n_samples=n, momentum=momentum)
    weights = [m.weight for _, m in layers]
    generator = torch.Generator().manual_seed(seed)

    def prune_to(fraction: float) -> list[Tensor]:
        new = _global_masks(weights, fraction)
        with torch.no_grad():
            torch._foreach_mul_(weights, new)
        return new

    state = {"masks": None, "prunes": 0, "step": 0}
    if t_begin == 0 and s_init > 0:
        state["masks"], state["prunes"] = prune_to(s_init), 1

    def mask_gradient(i: int):
        def hook(grad: Tensor) -> Tensor:  # pruned weights get no gradient
            masks = state["masks"]
            return grad if masks is None else grad * masks[i]
        return hook

    def after_step() -> None:  # keep the zeros exact, and prune on the schedule
        state["step"] += 1
        step = state["step"]
        if state["masks"] is not None:
            with torch.no_grad():
                torch._foreach_mul_(weights, state["masks"])
        if t_begin <= step <= t_end and ((step - t_begin) % frequency == 0 or step == t_end):
            state["masks"] = prune_to(gmp_schedule(step, initial=s_init, final=target,
                                                   begin=t_begin, end=t_end))
            state["prunes"] += 1

    # the cosine decay over the epochs, to lr · lr_final, set at the start of every epoch
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * e / epochs)))
    hooks = [w.register_hook(mask_gradient(i)) for i, w in enumerate(weights)]
    try:
        train_steps(model, (X, y), opt, task=task, steps=total_steps,
                    batch_size=None if bs >= n else bs, generator=generator,
                    after_step=after_step, on_epoch=lambda *_: decay.step())
    except DivergenceError as exc:
        raise DivergenceError(f"gradual magnitude pruning: {exc}") from None
    finally:
        for h in hooks:
            h.remove()
    prunes = state["prunes"]
    nnz, total = _sparsity(model)
    return BaselineResult("gradual magnitude pruning", model, target, 1 - nnz / total, nnz,
                          total, epochs=epochs, epochs_total=epochs,
                          seconds=time.perf_counter() - t_start,
                          details={"prunes": prunes, "begin_step": t_begin, "end_step": t_end,
                                   "steps": total_steps})


# --------------------------------------------------------------------------- (iii) grid


def _closest(runs: Sequence[GridRun], target: float) -> GridRun:
    # ties go to the smaller λ (the denser model), which is listed first
    return min(runs, key=lambda r: abs(r.zero_fraction - target))


def _grid_result(base: "GridSearchResult | None", model: nn.Module, best: GridRun,
                 target: float, **kw) -> GridSearchResult:
    if base is not None:
        kw = dict(epochs=base.epochs, epochs_total=base.epochs_total, seconds=base.seconds,
                  runs=base.runs, model_factory=base.model_factory)
    nnz, total = _sparsity(model)
    return GridSearchResult("lambda grid", model, target, 1 - nnz / total, nnz, total,
                            details={"lambda": best.lam, "grid_size": len(kw["runs"])}, **kw)


def lambda_grid_search(
    model_factory: Callable[[], nn.Module],
    X: Tensor,
    y: Tensor,
    *,
    task: str,
    zero_fraction: float,
    lambdas: Sequence[float],
    epochs: int = DEFAULTS.epochs,
    optimizer: str = DEFAULTS.optimizer,
    lr: float = DEFAULTS.lr_sgd,
    momentum: float = DEFAULTS.momentum,
    batch_size: int | None = DEFAULTS.batch_size,
    seed: int = 0,
    keep_states: bool = True,
    device: str | torch.device | None = None,
) -> GridSearchResult:
    """One full ℓ1 training per λ; keep the run whose zero fraction is closest to the target.

    Every λ trains a fresh ``model_factory()`` for ``epochs`` epochs with the library's
    proximal optimizer, exactly as one outer iteration of ``fit_sparse(mode="retrain")`` does
    (same initial weights, batch order and learning-rate schedule): the two differ only in how
    λ is chosen.

    Parameters
    ----------
    model_factory : callable
        Returns the untrained model, with the same initial weights at every call (e.g.
        ``lambda: mlp(784, [300, 100], 10, seed=0)``).
    X, y : Tensor
        Training data.
    task : {"regression", "classification"}
    zero_fraction : float
        Target share of zero penalised weights, in ``[0, 1)``.
    lambdas : sequence of float
        The grid, on the summed-loss scale (λ, not λ/N); tried in increasing order.
    epochs : int, default 20
        Length of each training.
    optimizer, lr, momentum, batch_size, seed, device
        As for :func:`~l1sparse.select.fit_sparse` (same defaults: ``"sgd"``, 0.1, 0.9).
    keep_states : bool, default True
        Keep every run's weights, so that :meth:`GridSearchResult.select` can judge the same
        grid against other targets.

    Returns
    -------
    GridSearchResult
        ``runs`` lists every λ with its attained zero fraction; ``trainings`` equals the grid
        size. Ties in distance go to the smaller λ.

    Raises
    ------
    ValueError
        For a zero fraction outside ``[0, 1)``, an empty grid or a λ that is negative or not
        finite, or a non-positive ``epochs``.
    """
    target = _check_fraction(zero_fraction, "zero_fraction")
    check_task(task)
    epochs = _check_int(epochs, "epochs", 1)
    try:
        grid = sorted(float(v) for v in lambdas)
    except (TypeError, ValueError):
        raise ValueError(f"The 'lambdas' parameter must be a sequence of numbers. "
                         f"Got {lambdas!r}.") from None
    if not grid or any(not math.isfinite(v) or v < 0 for v in grid):
        raise ValueError("The 'lambdas' parameter must be a non-empty sequence of finite "
                         f"numbers >= 0. Got {list(lambdas)!r}.")
    t0 = time.perf_counter()
    runs: list[GridRun] = []
    best_model, best_run = None, None
    for lam in grid:
        t_run = time.perf_counter()
        model = model_factory()
        _check_model(model)
        _train_fixed(model, X, y, task=task, lam=lam, epochs=epochs, optimizer=optimizer,
                     lr=lr, momentum=momentum, batch_size=batch_size, seed=seed, device=device)
        nnz, total = _sparsity(model)
        run = GridRun(lam, nnz, 1 - nnz / total, time.perf_counter() - t_run,
                      copy.deepcopy(model.state_dict()) if keep_states else None)
        runs.append(run)
        log.info("grid lambda=%.4g: zero fraction %.4f", lam, run.zero_fraction)
        if best_run is None or abs(run.zero_fraction - target) < abs(best_run.zero_fraction
                                                                      - target):
            best_model, best_run = model, run
    return _grid_result(None, best_model, best_run, target, epochs=epochs,
                        epochs_total=epochs * len(grid), seconds=time.perf_counter() - t0,
                        runs=runs, model_factory=model_factory if keep_states else None)
