"""Pieces shared by the experiments: result tables, the warm-started λ path, small helpers.

A :class:`Table` is what a reader of the paper looks for: named columns, one row per run, a
caption that states every hyperparameter. It renders as Markdown and CSV. A :class:`PathPoint`
is one point of a warm-started λ path (nnz per layer against λ), used both for the
"nonzeros against λ" figure and to start each selection on the dense side of its target.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..characterize import characterize
from ..config import DEFAULTS
from ..select import OuterRecord, SelectionResult
from ..sparsity import nnz_per_layer

__all__ = [
    "METHOD_WORDS",
    "Column",
    "PathPoint",
    "Run",
    "Table",
    "fmt_value",
    "history_points",
    "lambda_path",
    "path_start",
    "path_start_per_layer",
    "selection_columns",
    "subsample",
]

log = logging.getLogger(__name__)

# how a table names the way its rows were selected (:attr:`Run.method`)
METHOD_WORDS = {"paper": "plain ℓ1 (paper)", "default": "default (fit)"}


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One column of a :class:`Table`: the row key, the printed header and a number format."""

    key: str
    header: str
    fmt: str = "{}"


def selection_columns(metrics: list[Column], *, per_layer: bool,
                      zeros_overall: bool = False) -> list[Column]:
    """The columns of a selection table (T1–T4): the target and what was attained, globally or
    per layer (then ``zeros_overall`` adds the network's zero fraction), the selection's cost,
    the task's ``metrics`` and the time."""
    each = " per layer" if per_layer else ""
    columns = [
        Column("run", "run"),
        Column("target", f"target zeros{each}", "{:.3f}"),
        Column("attained", f"attained zeros{each}", "{:.4f}"),
        Column("nnz", f"nnz{each}"),
    ]
    if not per_layer:
        columns.append(Column("total", "weights"))
    elif zeros_overall:
        columns.append(Column("attained_total", "zeros overall", "{:.4f}"))
    return [
        *columns,
        Column("converged", "met"),
        Column("lambda", "λ_k" if per_layer else "λ", "{:.4g}"),
        Column("outer_iterations", "outer it."),
        Column("epochs", "epochs", "{:g}"),
        *metrics,
        Column("seconds", "s", "{:.1f}"),
    ]


def fmt_value(value: Any, fmt: str = "{}") -> str:
    """A cell as text: ``—`` for a missing value, lists joined with ``/``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, (list, tuple)):
        return " / ".join(fmt_value(v, fmt) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


@dataclass
class Table:
    """A result table: ``key`` ("T1"…), a title, a caption, columns and rows (dicts)."""

    key: str
    title: str
    caption: str
    columns: list[Column]
    rows: list[dict] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.key.lower()

    def to_markdown(self) -> str:
        head = "| " + " | ".join(c.header for c in self.columns) + " |"
        rule = "|" + "|".join("---:" if i else "---" for i in range(len(self.columns))) + "|"
        body = ["| " + " | ".join(fmt_value(row.get(c.key), c.fmt) for c in self.columns) + " |"
                for row in self.rows]
        return "\n".join([head, rule, *body])

    def to_csv(self) -> str:
        """Full-precision values; lists (per-layer values) joined with ``;``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c.key for c in self.columns])
        for row in self.rows:
            cells = []
            for c in self.columns:
                v = row.get(c.key)
                if v is None:
                    cells.append("")
                elif isinstance(v, (list, tuple)):
                    cells.append(";".join(repr(x) if isinstance(x, float) else str(x) for x in v))
                elif isinstance(v, float):
                    cells.append(repr(v))
                else:
                    cells.append(str(v))
            writer.writerow(cells)
        return buf.getvalue()


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One trained network of an experiment, kept in memory for the later tables and figures.

    ``label`` names it in figures ("90 % zeros", "dense", "per layer"); ``selection`` is
    ``None`` for the dense reference. ``method`` is how it was selected: ``"paper"`` (the
    paper's plain ℓ1, selected on the scheduler from the dense side, :func:`select_l1`)
    or ``"default"`` (:func:`l1sparse.select.fit_sparse` with the defaults of ``l1sparse fit``).
    """

    table: str
    label: str
    model: nn.Module
    lambdas: dict[str, float]
    selection: SelectionResult | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    method: str = "paper"


def history_points(selection: SelectionResult) -> list[tuple[float, int]]:
    """(λ, nnz) of every outer iteration of a single-λ selection."""
    out = []
    for record in selection.history:
        lam = next(iter(record.lambdas.values()))
        out.append((lam, record.nnz_total))
    return out


# --------------------------------------------------------------------------- the λ path


@dataclass
class PathPoint:
    """The network after ``epochs`` epochs at ``lam`` (warm-started from the previous point)."""

    lam: float
    nnz: dict[str, int]
    total: dict[str, int]
    loss: float  # full-data summed fidelity
    metric: float | None  # test metric, when a test set was given
    seconds: float
    state: dict | None = field(default=None, repr=False)

    @property
    def nnz_total(self) -> int:
        return sum(self.nnz.values())

    @property
    def zero_fraction(self) -> float:
        return 1.0 - self.nnz_total / sum(self.total.values())


def lambda_path(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    task: str,
    lam_start: float,
    factor: float,
    epochs: int,
    stop_zero_fraction: float,
    max_points: int = 40,
    optimizer: str = "adam",
    lr: float = 1e-3,
    batch_size: int | None = 128,
    seed: int = 0,
    evaluate: Callable[[nn.Module], float] | None = None,
    keep_states: bool = True,
) -> list[PathPoint]:
    """Warm-started path of increasing λ, from ``lam_start`` by ``factor``, same λ all layers.

    Each point continues from the previous weights for ``epochs`` epochs at constant learning
    rate. The path stops once the zero fraction reaches ``stop_zero_fraction`` or after
    ``max_points`` points. Going *up* in λ matters for networks: weights pruned by a too-large
    λ cannot come back once whole units are cut off (their gradient is exactly zero), so a
    network is best sparsified from the dense side.

    ``model`` is trained in place; with ``keep_states`` every point keeps a copy of the weights
    (small networks only).
    """
    if not (lam_start > 0 and factor > 1 and epochs >= 1):
        raise ValueError("lambda_path needs lam_start > 0, factor > 1 and epochs >= 1; got "
                         f"lam_start={lam_start}, factor={factor}, epochs={epochs}.")
    from ..penalty import lambda_per_sample, layer_names, set_group_l1
    from ..train import batches_per_epoch, make_optimizer, train_steps

    names = layer_names(model)
    n = X.shape[0]
    # one optimizer and one batch order along the whole path: each point continues the last
    opt = make_optimizer(model, optimizer, lr=lr, lambdas={k: 0.0 for k in names},
                         n_samples=n, momentum=DEFAULTS.momentum_for(batch_size=batch_size))
    generator = torch.Generator().manual_seed(seed)
    per_epoch = batches_per_epoch(n, batch_size)
    totals = {name: m.weight.numel() for name, m in model.named_modules() if name in names}
    points: list[PathPoint] = []
    lam = lam_start
    step = 0
    for _ in range(max_points):
        t0 = time.perf_counter()
        lambdas = {k: lam for k in names}
        set_group_l1(opt, {k: lambda_per_sample(v, n) for k, v in lambdas.items()})
        step = train_steps(model, (X, y), opt, task=task, steps=step + epochs * per_epoch,
                           start_step=step, batch_size=batch_size, generator=generator)
        model.eval()
        report = characterize(model, X, y, task=task, lambdas=lambdas)
        point = PathPoint(lam=lam, nnz=nnz_per_layer(model), total=totals, loss=report.loss,
                          metric=evaluate(model) if evaluate is not None else None,
                          seconds=time.perf_counter() - t0,
                          state=copy.deepcopy(model.state_dict()) if keep_states else None)
        points.append(point)
        log.info("path: lambda=%.4g nnz=%d zero fraction=%.4f", lam, point.nnz_total,
                 point.zero_fraction)
        if point.zero_fraction >= stop_zero_fraction:
            break
        lam *= factor
    return points


def path_start(points: Sequence[PathPoint], target_nnz: float,
               layers: Sequence[str] | None = None) -> tuple[float, int | None]:
    """Where to start a selection for ``target_nnz`` nonzeros (over ``layers``, default all).

    Returns ``(λ_init, index)``: λ interpolated log-linearly in (λ, nnz) between the last path
    point denser than the target and the first one at least as sparse, and the index of that
    denser point, whose weights the selection starts from (``None``: start from the weights
    before the path, every point being already too sparse).
    """
    def count(p: PathPoint) -> int:
        return sum(p.nnz[n] for n in (layers or p.nnz))

    for i, p in enumerate(points):
        if count(p) <= target_nnz:
            if i == 0:
                return p.lam, None
            q = points[i - 1]
            hi, lo = count(q), count(p)
            if hi <= lo or lo <= 0:
                return math.sqrt(q.lam * p.lam), i - 1
            t = (math.log(hi) - math.log(max(target_nnz, 1.0))) / (math.log(hi) - math.log(lo))
            return math.exp(math.log(q.lam) + t * (math.log(p.lam) - math.log(q.lam))), i - 1
    last = points[-1]
    return last.lam * 2, len(points) - 1


def path_start_per_layer(points: Sequence[PathPoint], targets: dict[str, float]
                         ) -> tuple[dict[str, float], int | None]:
    """Per-layer version of :func:`path_start`: λ_k from each layer's own curve along the
    path, and the last point at which *every* layer is still denser than its target (``None``:
    the weights before the path)."""
    lams, indices = {}, []
    for name, nnz in targets.items():
        lams[name], index = path_start(points, nnz, layers=[name])
        indices.append(-1 if index is None else index)
    start = min(indices)
    return lams, None if start < 0 else start


# --------------------------------------------------------------------------- training


def train_dense(model: nn.Module, X: Tensor, y: Tensor, *, task: str, epochs: int,
                optimizer: str, lr: float, batch_size: int | None, seed: int,
                lr_final: float) -> None:
    """The dense reference: ``epochs`` epochs at λ = 0 with the library's loop, the learning
    rate decayed by a cosine to ``lr · lr_final``."""
    from ..penalty import layer_names
    from ..train import batches_per_epoch, make_optimizer, train_steps

    n = X.shape[0]
    budget = max(1, epochs * batches_per_epoch(n, batch_size))
    opt = make_optimizer(model, optimizer, lr=lr, lambdas={k: 0.0 for k in layer_names(model)},
                         n_samples=n, momentum=DEFAULTS.momentum_for(batch_size=batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * min(
            1.0, s / budget))))
    train_steps(model, (X, y), opt, task=task, steps=budget, batch_size=batch_size,
                generator=torch.Generator().manual_seed(seed), after_step=sched.step)


def select_l1(model: nn.Module, X: Tensor, y: Tensor, *, task: str, target, epochs: int,
              optimizer: str, lr: float, batch_size: int | None, seed: int, lr_final: float,
              callback=None) -> SelectionResult:
    """The paper's plain-ℓ1 rows: ``model`` (the dense side of the λ path) trained to
    ``target`` by :func:`l1sparse.select.fit_sparse` with ``penalty="l1"``: one run of
    ``epochs`` epochs on the :class:`~l1sparse.scheduler.SparsityScheduler`."""
    from ..select import fit_sparse

    return fit_sparse(model, X, y, task=task, target=target, epochs=epochs,
                      optimizer=optimizer, lr=lr, batch_size=batch_size, penalty="l1",
                      seed=seed, lr_final=lr_final, callback=callback)


def select_retrain(model: nn.Module, X: Tensor, y: Tensor, *, task: str, target, epochs: int,
                   optimizer: str, lr: float, batch_size: int | None, seed: int,
                   lr_final: float, max_trainings: int, callback=None) -> SelectionResult:
    """Plain-ℓ1 rows by the retrain scheme: full trainings of ``epochs`` epochs from the
    weights ``model`` has on entry, the next λ by the sorted-gradient rule
    (:func:`l1sparse.retrain.retrain_select`, ``rule="sorted"``), each trained to its budget."""
    from ..retrain import retrain_select

    return retrain_select(model, X, y, task=task, target=target, rule="sorted",
                          epochs_per_training=epochs, batch_size=batch_size, lr=lr,
                          optimizer=optimizer, momentum=DEFAULTS.momentum_for(
                              batch_size=batch_size), lr_final=lr_final, seed=seed,
                          max_trainings=max_trainings, stop_on_entry=False,
                          callback=callback).to_selection()


# --------------------------------------------------------------------------- helpers


def subsample(X: Tensor, y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` rows of ``(X, y)`` drawn without replacement from ``seed`` (all rows if ``None``)."""
    if n is None or n >= X.shape[0]:
        return X, y
    idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    idx = idx.sort().values
    return X[idx], y[idx]


def progress_logger(prefix: str, sink: Callable[[str], None] | None
                    ) -> Callable[[OuterRecord], None]:
    """A selection callback that forwards one line per outer iteration to ``sink``."""
    def callback(record: OuterRecord) -> None:
        lam = ",".join(f"{v:.4g}" for v in record.lambdas.values())
        line = (f"{prefix} outer {record.iteration:>3} lambda={lam} nnz={record.nnz_total} "
                f"met={record.met}")
        log.debug(line)
        if sink is not None:
            sink(line)
    return callback
