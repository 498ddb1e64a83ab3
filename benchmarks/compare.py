"""Side by side: l1sparse's λ selection against what users pick instead, at a target sparsity.

On Fashion-MNIST (60,000 training / 10,000 test images) with LeNet-300-100 (784-300-100-10),
for each target zero fraction (default 90, 95 and 98 %), in one process:

- ``warm``: ``fit_sparse(..., mode="warm", grad_samples=None)`` — one continued run, λ updated
  every E/10 epochs from the full-data gradient;
- ``warm+debias``: the warm result, then ``debias`` (support fixed, no penalty) for
  ``--finetune-epochs`` epochs; its cost is the warm run's plus the debias epochs;
- ``warm-sub``: ``fit_sparse(..., mode="warm", grad_samples=10000)``: the gradient magnitudes
  that steer λ from a fixed 10k subsample, as the command line does past 20k samples;
  ``warm-sub+debias``: that, then the same debias;
- ``retrain``: ``fit_sparse(..., mode="retrain", grad_samples=None)`` — a full E-epoch
  training per outer iteration, the paper's scheme;
- ``prune-finetune``: dense training, global magnitude pruning, ``--finetune-epochs`` epochs of
  fine-tuning with the mask kept (:func:`l1sparse.baselines.prune_and_finetune`);
- ``gmp``: gradual magnitude pruning, cubic schedule (Zhu & Gupta 2017)
  (:func:`l1sparse.baselines.gradual_magnitude_pruning`);
- ``grid``: a full ℓ1 training per λ of a fixed grid, keeping the closest
  (:func:`l1sparse.baselines.lambda_grid_search`). The grid does not depend on the target, so it
  is trained once and judged against every target; its whole cost is charged to each.

The floor is one dense training of the same E epochs (same optimizer, schedule and batch
order, λ = 0), timed in the same process before and after the methods. All methods train with
the same optimizer, learning rate and momentum (by default those of ``fit_sparse``, read from its
signature), the same cosine decay, batch ``--batch-size`` and initial weights; fine-tuning and
debias use ``--finetune-optimizer`` / ``--finetune-lr`` (Adam, 1e-3).

Usage::

    python benchmarks/compare.py --quick          # a first look: 10k images, 5 epochs, 95 %
    python benchmarks/compare.py                  # the full comparison (~11 min here, 1 thread)
    python benchmarks/compare.py --methods warm,gmp --targets 0.95 --epochs 20
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import os
import sys
import time
from dataclasses import dataclass

import torch

from l1sparse.baselines import (
    gradual_magnitude_pruning,
    lambda_grid_search,
    prune_and_finetune,
)
from l1sparse.compact import unit_report
from l1sparse.data import load_mnist_format
from l1sparse.losses import metric
from l1sparse.models import mlp
from l1sparse.select import TrainingSolver, fit_sparse
from l1sparse.sparsity import sparsity
from l1sparse.train import debias, make_optimizer

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("warm", "warm+debias", "warm-sub", "warm-sub+debias", "retrain", "prune-finetune",
           "gmp", "grid")
SUBSAMPLE = 10_000  # grad_samples of "warm-sub": what `l1sparse fit` uses past 20k samples
# λ/N of the grid: 1-2-5 steps per decade over two decades, around where LeNet-300-100 goes
# from moderately to very sparse with each optimizer at its default learning rate (found by a
# first look, not tuned to the targets).
DEFAULT_GRIDS = {"sgd": "1e-4,2e-4,5e-4,1e-3,2e-3,5e-3,1e-2",
                 "adam": "1e-4,2e-4,5e-4,1e-3,2e-3,5e-3,1e-2"}


@dataclass
class Row:
    method: str
    target: float | None
    zero_fraction: float
    test_accuracy: float
    seconds: float  # wall
    cpu_seconds: float  # CPU time of this process
    epochs_total: int
    epochs: int
    notes: str = ""
    layers: str = ""  # zero fraction per layer
    units: str = ""  # live hidden units per hidden layer

    @property
    def trainings(self) -> float:
        return self.epochs_total / self.epochs

    def distance_pp(self) -> float | None:
        return None if self.target is None else 100 * abs(self.zero_fraction - self.target)


def warm_up(X, y) -> None:
    """Pay the one-off costs (lazy imports of torch.optim, first kernels) before timing."""
    net = mlp(X.shape[1], [8], 10, seed=0)
    torch.optim.Adam(net.parameters(), lr=1e-3)
    for name in ("adam", "sgd"):
        opt = make_optimizer(net, name, lr=1e-3, lambdas={"fc1": 1.0, "fc2": 1.0},
                             n_samples=X.shape[0])
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[:128]), y[:128]).backward()
            opt.step()


def fmt_table(rows: list[Row], floor: tuple[float, float]) -> str:
    """``floor``: (wall, CPU) seconds of one dense training."""
    lines = ["| method | target zeros | attained zeros | \\|Δ\\| pp | test acc | CPU s | "
             "× dense (CPU) | wall s | × dense (wall) | trainings | zeros per layer | live units "
             "| notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        target = "—" if r.target is None else f"{r.target:.0%}"
        dist = "—" if r.target is None else f"{r.distance_pp():.2f}"
        lines.append(
            f"| {r.method} | {target} | {r.zero_fraction:.2%} | {dist} | {r.test_accuracy:.4f} "
            f"| {r.cpu_seconds:.1f} | {r.cpu_seconds / floor[1]:.2f} | {r.seconds:.1f} "
            f"| {r.seconds / floor[0]:.2f} | {r.trainings:.2f} "
            f"({r.epochs_total:g} ep) | {r.layers} | {r.units} | {r.notes} |")
    return "\n".join(lines)


def write_markdown(path: str, args, machine: dict, setup: dict, rows: list[Row],
                   floor: tuple[float, float], finished: bool, wall: float) -> None:
    mlines = "\n".join(f"- {k}: {v}" for k, v in machine.items())
    slines = "\n".join(f"- {k}: {v}" for k, v in setup.items())
    status = (f"complete; the whole script took {wall / 60:.1f} min" if finished else
              f"**partial** (still running or interrupted; {wall / 60:.1f} min so far)")
    cmd = "python benchmarks/compare.py " + " ".join(sys.argv[1:])
    text = f"""# Sparsity at a target: l1sparse against the usual alternatives

Generated by `{cmd}` ({status}).

**Columns.** *attained zeros*: exact zeros among the penalised weights (all three weight
matrices, biases excluded). *|Δ| pp*: |attained − target| in percentage points. *test acc*: on
the 10,000 test images. *seconds*: wall time of the whole method (selection, training, pruning,
fine-tuning; data already loaded), as CPU time of the process (`time.process_time`, with one
thread the wall time of an idle machine; the machine is shared, and other jobs disturb it less
than the wall clock, though not at all is too much to hope for) and as wall time. *× dense*: over one dense training of the
same {args.epochs} epochs (λ = 0, same loop, optimizer and schedule), timed in this process at
the start and again at the end; the ratios use the mean of the two (until the end timing
exists, the start one). *trainings*: epochs trained in all / {args.epochs}. *zeros per layer*: fc1 / fc2 / fc3
(235,200 / 30,000 / 1,000 weights). *live units*: hidden units of the first / second hidden
layer (of 300 / 100) with at least one nonzero incoming and one nonzero outgoing weight
(`l1sparse.compact.unit_report`); the others can be removed without changing the function
(`compact`).

**Methods.** `warm` / `retrain`: `fit_sparse(mode=…, grad_samples=None)`, otherwise its
defaults (tolerance 0.5 pp): λ steered by the full-data gradient.
`warm-sub`: warm mode with the gradient magnitudes that steer λ
estimated on a fixed {SUBSAMPLE}-sample subset (`grad_samples`, as `l1sparse fit` does past 20k
samples). `warm+debias` / `warm-sub+debias`: the warm / warm-sub model, then `debias` for {args.finetune_epochs} epochs ({args.finetune_optimizer}, constant lr
{args.finetune_lr:g}; support fixed, no penalty); cost = warm + debias. `prune-finetune`: dense training, global magnitude
pruning (`torch.nn.utils.prune.global_unstructured`, L1Unstructured, made permanent), then
{args.finetune_epochs} epochs of fine-tuning exactly like that debias, with the mask kept. `gmp`: gradual
magnitude pruning in one run of {args.epochs} epochs, cubic schedule from 0 to the target over
the first {args.gmp_end:.0%} of the steps, a global prune every {args.gmp_frequency} steps,
masks fixed between prunes. `grid`: one full ℓ1 training per λ/N in
{{{args.grid}}}, keeping the run closest to the target; the grid is trained once and judged
against every target, and its whole cost is charged to each.

## Machine

{mlines}

## Setup

{slines}

## Results

{fmt_table(rows, floor)}
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a first look: 10,000 training images, 5 epochs, target 0.95")
    parser.add_argument("--epochs", type=int, default=None, help="one full training (10; quick 5)")
    parser.add_argument("--targets", default=None, help="zero fractions (0.9,0.95,0.98; quick 0.95)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images (60000; quick 10000), a seeded random subset")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    defaults = {k: v.default for k, v in inspect.signature(fit_sparse).parameters.items()}
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=defaults["optimizer"],
                        help=f"all methods (fit_sparse's default: {defaults['optimizer']})")
    parser.add_argument("--lr", type=float, default=defaults["lr"],
                        help=f"all methods (fit_sparse's default: {defaults['lr']})")
    parser.add_argument("--momentum", type=float, default=defaults["momentum"],
                        help=f"sgd only (fit_sparse's default: {defaults['momentum']})")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--finetune-epochs", type=int, default=2,
                        help="fine-tuning of prune-finetune and the debias rows (2)")
    parser.add_argument("--finetune-optimizer", choices=("sgd", "adam"), default="adam",
                        help="optimizer of that fine-tuning / debias (adam)")
    parser.add_argument("--finetune-lr", type=float, default=1e-3,
                        help="its constant learning rate (1e-3)")
    parser.add_argument("--gmp-end", type=float, default=0.7,
                        help="GMP reaches the target at this fraction of the run (0.7)")
    parser.add_argument("--gmp-frequency", type=int, default=100, help="steps between prunes")
    parser.add_argument("--grid", default=None,
                        help="λ/N values of the grid search (default: by optimizer, "
                             f"{DEFAULT_GRIDS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="markdown file (benchmarks/RESULTS.md; quick RESULTS_QUICK.md)")
    parser.add_argument("--verbose", action="store_true", help="log every outer iteration")
    args = parser.parse_args(argv)

    args.epochs = args.epochs or (5 if args.quick else 10)
    args.targets = args.targets or ("0.95" if args.quick else "0.9,0.95,0.98")
    args.train_size = args.train_size or (10_000 if args.quick else 60_000)
    args.grid = args.grid or DEFAULT_GRIDS[args.optimizer]
    args.out = args.out or os.path.join(HERE, "RESULTS_QUICK.md" if args.quick else "RESULTS.md")
    try:
        targets = [float(t) for t in args.targets.split(",")]
        grid = [float(v) for v in args.grid.split(",")]
    except ValueError as exc:
        parser.error(f"--targets and --grid must be comma-separated numbers ({exc}).")
    if any(not 0 <= t < 1 for t in targets):
        parser.error(f"--targets must lie in [0, 1). Got {args.targets}.")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}.")
    if args.threads < 1 or args.epochs < 1:
        parser.error("--threads and --epochs must be positive integers.")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    t_script = time.perf_counter()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    ds = load_mnist_format("fashion-mnist")
    X, y = ds.X_train, ds.y_train
    if args.train_size < X.shape[0]:
        idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(args.seed))
        X, y = X[idx[:args.train_size]], y[idx[:args.train_size]]
    X_test, y_test = ds.X_test, ds.y_test
    n = X.shape[0]
    E, F = args.epochs, args.finetune_epochs
    common = dict(task="classification", epochs=E, optimizer=args.optimizer, lr=args.lr,
                  momentum=args.momentum, batch_size=args.batch_size, seed=args.seed)

    def factory():
        return mlp(784, [300, 100], 10, seed=args.seed)

    def acc(model) -> float:
        return metric(model, X_test, y_test, "classification")

    def zeros(model) -> float:
        return sparsity(model).zero_fraction

    def per_layer(model) -> str:
        return " / ".join(f"{layer.zero_fraction:.1%}" for layer in sparsity(model).layers)

    def live_units(model) -> str:
        return " / ".join(str(u.live) for u in unit_report(model))

    machine = machine_description(args.threads)
    setup = {
        "data": f"Fashion-MNIST, {n} training images"
                + (" (seeded random subset)" if n < ds.n_train else "")
                + f", {X_test.shape[0]} test images, pixels/255",
        "model": "LeNet-300-100 (784-300-100-10, ReLU), 266,200 weights, seed "
                 f"{args.seed} for the initial weights and the batch order",
        "training": f"{E} epochs, batch {args.batch_size}, {args.optimizer} (proximal where "
                    f"penalised) lr {args.lr}"
                    + (f" momentum {args.momentum}" if args.optimizer == "sgd" else "")
                    + " with cosine decay to 5 %",
        "fine-tuning / debias": f"{args.finetune_optimizer}, constant lr {args.finetune_lr}, "
                                f"{args.finetune_epochs} epochs, support fixed",
        "targets": ", ".join(f"{t:.0%}" for t in targets),
    }

    warm_up(X, y)
    print(f"data: {n} train, {X_test.shape[0]} test; threads {args.threads}; "
          f"epochs {E}; targets {targets}; methods {methods}", flush=True)

    class Clock:
        """Wall and CPU seconds of this process (the CPU time is what other jobs on a shared
        machine disturb least; with one thread it equals the wall time on an idle machine)."""

        def __init__(self) -> None:
            self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

        def read(self) -> tuple[float, float]:
            return time.perf_counter() - self.wall0, time.process_time() - self.cpu0

    def dense_run(label: str) -> Row:
        """The floor: one dense training of E epochs (λ = 0, same loop and schedule)."""
        dense = factory()
        clock = Clock()
        solver = TrainingSolver(dense, X, y, task="classification", optimizer=args.optimizer,
                                lr=args.lr, momentum=args.momentum,
                                batch_size=args.batch_size, seed=args.seed, schedule_epochs=E)
        solver.solve({k: 0.0 for k in solver.layer_names()}, E)
        row = Row(label, None, zeros(dense), acc(dense), *clock.read(), E, E,
                  "no penalty, no pruning", per_layer(dense), live_units(dense))
        print(f"{label}: {row.seconds:.1f} s wall, {row.cpu_seconds:.1f} s CPU, "
              f"test acc {row.test_accuracy:.4f}", flush=True)
        return row

    rows = [dense_run("dense (floor, start)")]
    floor = (rows[0].seconds, rows[0].cpu_seconds)

    def emit(row: Row, model) -> None:
        row.layers, row.units = per_layer(model), live_units(model)
        rows.append(row)
        d = "" if row.target is None else f" |Δ| {row.distance_pp():.2f} pp"
        print(f"{row.method:>15} target {row.target}: zeros {row.zero_fraction:.4f}{d} "
              f"acc {row.test_accuracy:.4f} {row.seconds:.1f} s wall "
              f"({row.seconds / floor[0]:.2f}× dense), {row.cpu_seconds:.1f} s CPU "
              f"({row.cpu_seconds / floor[1]:.2f}× dense), {row.trainings:.2f} trainings "
              f"{row.notes}", flush=True)
        write_markdown(args.out, args, machine, setup, rows, floor, False,
                       time.perf_counter() - t_script)

    grid_result = grid_time = None
    for target in targets:
        for label, samples in (("warm", None), ("warm-sub", SUBSAMPLE)):
            wanted = [m for m in (label, label + "+debias") if m in methods]
            if not wanted or (samples is not None and samples >= n):
                continue
            model = factory()
            clock = Clock()
            res = fit_sparse(model, X, y, zero_fraction=target, mode="warm",
                             grad_samples=samples, **common)
            wall, cpu = clock.read()
            notes = (f"λ/N={res.lam / n:.3g}, {res.outer_iterations} outer, "
                     f"{'met' if res.converged else 'NOT met'}"
                     + (f", γ from {samples} samples" if samples else ""))
            if label in methods:
                emit(Row(label, target, zeros(model), acc(model), wall, cpu, res.epochs_total,
                         E, notes), model)
            if label + "+debias" in methods:
                model = copy.deepcopy(model)
                clock = Clock()
                debias(model, X, y, task="classification", epochs=F, lr=args.finetune_lr,
                       optimizer=args.finetune_optimizer, batch_size=args.batch_size,
                       generator=torch.Generator().manual_seed(args.seed + 1))
                w2, c2 = clock.read()
                emit(Row(label + "+debias", target, zeros(model), acc(model), wall + w2,
                         cpu + c2, res.epochs_total + F, E, notes + f", +{F} debias ep"), model)
        if "retrain" in methods:
            model = factory()
            clock = Clock()
            res = fit_sparse(model, X, y, zero_fraction=target, mode="retrain",
                             grad_samples=None, **common)
            emit(Row("retrain", target, zeros(model), acc(model), *clock.read(),
                     res.epochs_total, E,
                     f"λ/N={res.lam / n:.3g}, {res.outer_iterations} outer, "
                     f"{'met' if res.converged else 'NOT met'}"), model)
        if "prune-finetune" in methods:
            clock = Clock()
            res = prune_and_finetune(factory(), X, y, zero_fraction=target,
                                     finetune_epochs=F, finetune_lr=args.finetune_lr,
                                     finetune_optimizer=args.finetune_optimizer, **common)
            emit(Row("prune-finetune", target, res.zero_fraction, acc(res.model),
                     *clock.read(), res.epochs_total, E, f"{E} dense + {F} fine-tune ep"),
                 res.model)
        if "gmp" in methods:
            clock = Clock()
            res = gradual_magnitude_pruning(factory(), X, y, zero_fraction=target,
                                            end=args.gmp_end, frequency=args.gmp_frequency,
                                            **common)
            emit(Row("gmp", target, res.zero_fraction, acc(res.model), *clock.read(),
                     res.epochs_total, E, f"{res.details['prunes']} prunes"), res.model)
        if "grid" in methods:
            if grid_result is None:
                clock = Clock()
                grid_result = lambda_grid_search(factory, X, y, zero_fraction=target,
                                                 lambdas=[g * n for g in grid], **common)
                grid_time = clock.read()
                res = grid_result
                print("grid: " + ", ".join(f"λ/N={r.lam / n:.3g}→{r.zero_fraction:.4f}"
                                           for r in grid_result.runs), flush=True)
                setup["grid (λ/N → zeros)"] = ", ".join(
                    f"{r.lam / n:.3g} → {r.zero_fraction:.2%}" for r in grid_result.runs)
            else:
                res = grid_result.select(target)
            emit(Row("grid", target, res.zero_fraction, acc(res.model), *grid_time,
                     res.epochs_total, E, f"λ/N={res.lam / n:.3g} of {len(grid)}"), res.model)

    # the floor again, at the end: the machine is shared, so its speed drifts; the ratios use
    # the mean of the two dense timings
    rows.insert(1, dense_run("dense (floor, end)"))
    floor = ((rows[0].seconds + rows[1].seconds) / 2,
             (rows[0].cpu_seconds + rows[1].cpu_seconds) / 2)
    wall = time.perf_counter() - t_script
    if hasattr(os, "getloadavg"):
        machine["load average (1 min) at start / end"] = f"{load0:.2f} / {os.getloadavg()[0]:.2f}"
    write_markdown(args.out, args, machine, setup, rows, floor, True, wall)
    print()
    print(fmt_table(rows, floor))
    print(f"\nwrote {args.out}; total {wall / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
