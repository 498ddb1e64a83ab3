"""Exploration: do other ways of running the ℓ1 selection keep more hidden units alive?

On Fashion-MNIST with LeNet-300-100, ℓ1 with one λ switches most hidden units off and ends 2–3
points of test accuracy below magnitude pruning (``benchmarks/RESULTS.md``). This script runs the
warm selection (γ from a 10k subsample, 10 epochs, proximal SGD lr 0.1 momentum 0.9) at 95 % and
98 % zeros in several ways, and gradual magnitude pruning for reference:

- ``default``: ``fit_sparse`` as it is;
- ``slow``: a hundredth of the first-order λ_0 (instead of a tenth), λ updated every half
  epoch, at most ×1.25 per update: the target is approached gradually;
- ``warm-up``: 5 epochs without penalty, then the selection over 5 epochs on that network;
- ``per-layer``: per-layer targets copying the per-layer zero fractions of the gmp network;
- ``rebalance``: after every outer iteration, each hidden unit's incoming weights and bias are
  scaled by c and its outgoing weights by 1/c, with c minimising the unit's ℓ1 penalty (the
  network computes the same function: ReLU is positively homogeneous), momentum rescaled alike.

For each: attained zeros, test accuracy, accuracy after a 2-epoch debias (Adam 1e-3, support
fixed) and the live hidden units.

Usage::

    python benchmarks/l1_variants.py --threads 1 --write
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

from l1sparse.baselines import gradual_magnitude_pruning
from l1sparse.compact import rebalance, unit_report
from l1sparse.data import load_mnist_format
from l1sparse.losses import metric
from l1sparse.models import mlp
from l1sparse.penalty import penalised_layers
from l1sparse.select import TrainingSolver, fit_sparse, make_target, select_lambda
from l1sparse.sparsity import sparsity
from l1sparse.train import debias

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("gmp", "default", "slow", "warm-up", "per-layer", "rebalance")
SUBSAMPLE = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--targets", default="0.95,0.98", help="zero fractions (0.95,0.98)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write --out")
    parser.add_argument("--out", default=os.path.join(HERE, "L1_VARIANTS.md"))
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}.")
    targets = [float(t) for t in args.targets.split(",")]
    torch.set_num_threads(args.threads)

    ds = load_mnist_format("fashion-mnist")
    X, y = ds.X_train, ds.y_train
    common = dict(task="classification", optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128,
                  seed=args.seed)

    def solver_for(net, epochs):
        return TrainingSolver(net, X, y, schedule_epochs=epochs, grad_samples=SUBSAMPLE,
                              **common)

    rows = []
    for target in targets:
        gmp_split = None
        for variant in variants:
            net = mlp(784, [300, 100], 10, seed=args.seed)
            t0, epochs = time.process_time(), 10.0
            if variant == "gmp":
                res = gradual_magnitude_pruning(net, X, y, zero_fraction=target, epochs=10,
                                                **common)
                net = res.model
                gmp_split = [layer.zero_fraction for layer in sparsity(net).layers]
            elif variant == "default":
                epochs = fit_sparse(net, X, y, zero_fraction=target, epochs=10,
                                    grad_samples=SUBSAMPLE, **common).epochs_total
            elif variant == "slow":
                epochs = fit_sparse(net, X, y, zero_fraction=target, epochs=10,
                                    grad_samples=SUBSAMPLE, lam_init_factor=0.01,
                                    warm_chunk=0.5, max_step=1.25, **common).epochs_total
            elif variant == "warm-up":
                solver_for(net, 10).solve({n: 0.0 for n, _ in penalised_layers(net)}, 5)
                epochs = 5 + fit_sparse(net, X, y, zero_fraction=target, epochs=5,
                                        grad_samples=SUBSAMPLE, **common).epochs_total
            elif variant == "per-layer":
                if gmp_split is None:
                    parser.error("per-layer needs gmp earlier in --variants")
                epochs = fit_sparse(net, X, y, layer_zero_fraction=gmp_split, epochs=10,
                                    grad_samples=SUBSAMPLE, **common).epochs_total
            elif variant == "rebalance":
                solver = solver_for(net, 10)
                result = select_lambda(
                    solver, make_target(net, zero_fraction=target), epochs=10,
                    callback=lambda r: rebalance(solver.model, r.lambdas, solver.optimizer))
                epochs = result.epochs_total
            cpu = time.process_time() - t0
            deb = copy.deepcopy(net)
            debias(deb, X, y, task="classification", epochs=2, lr=1e-3, optimizer="adam",
                   batch_size=128, generator=torch.Generator().manual_seed(args.seed + 1))
            row = (variant, target, sparsity(net).zero_fraction,
                   metric(net, ds.X_test, ds.y_test, "classification"),
                   metric(deb, ds.X_test, ds.y_test, "classification"),
                   " / ".join(str(u.live) for u in unit_report(net)), epochs, cpu)
            rows.append(row)
            print(" ".join(str(round(v, 4)) if isinstance(v, float) else str(v) for v in row),
                  flush=True)

    lines = ["| variant | target | attained zeros | test acc | + 2-epoch debias | live units "
             "(of 300 / 100) | epochs | CPU s |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for variant, target, zf, acc, acc_d, live, epochs, cpu in rows:
        lines.append(f"| {variant} | {target:.0%} | {zf:.2%} | {acc:.4f} | {acc_d:.4f} | {live} "
                     f"| {epochs:g} | {cpu:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        mlines = "\n".join(f"- {k}: {v}" for k, v in machine_description(args.threads).items())
        doc = __doc__.split("Usage::")[0].strip().split("\n", 1)[1].strip()
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"# Ways of running the ℓ1 selection, and the hidden units they keep\n\n"
                    f"Generated by `python benchmarks/l1_variants.py "
                    f"{' '.join(sys.argv[1:])}`.\n\n{doc}\n\n## Machine\n\n{mlines}\n\n"
                    f"## Results\n\n{table}\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
