"""Benchmark: ℓ1 against gradual magnitude pruning at the same number of nonzeros.

Trains LeNet-300-100 on Fashion-MNIST to 95 % and 98 % zeros both ways — ``fit_sparse`` in warm
mode with the 10k gradient subsample (``warm-sub`` in ``compare.py``) and gradual magnitude
pruning — and reports, for each network,

- the ℓ1 objective ``L(Θ)/N + (λ/N)·Σ‖W_k‖₁`` at the λ the selector chose, on the training
  set, as trained and after :func:`l1sparse.compact.rebalance` (same function, smallest penalty
  per unit): which of the two networks the ℓ1 model itself prefers;
- its live hidden units (a nonzero incoming and outgoing weight) and the architecture that
  :func:`l1sparse.compact.compact` leaves: ℓ1 with one λ across layers switches whole units off;
- the latency of one forward pass at batch 1 and 256: as trained (dense ``nn.Linear`` with
  zeros), ``to_sparse(batch_size=B)`` (CSR layers where their own timing says so), ``compact``
  (the narrower dense MLP), and ``compact`` then ``to_sparse``.

Usage::

    python benchmarks/l1_vs_magnitude.py --threads 1 --write
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

from l1sparse.baselines import gradual_magnitude_pruning
from l1sparse.compact import compact, rebalance, unit_report
from l1sparse.data import load_mnist_format
from l1sparse.losses import fidelity, metric
from l1sparse.penalty import penalised_layers
from l1sparse.models import mlp
from l1sparse.select import fit_sparse
from l1sparse.sparse_inference import to_sparse
from l1sparse.sparsity import sparsity

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/
from sparse_inference import time_us  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = (0.95, 0.98)
BATCHES = (1, 256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (10)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (7)")
    parser.add_argument("--min-run-time", type=float, default=0.2,
                        help="seconds per blocked_autorange measurement (0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write --out")
    parser.add_argument("--out", default=os.path.join(HERE, "L1_VS_MAGNITUDE.md"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.epochs < 1 or args.rounds < 1:
        parser.error("--threads, --epochs and --rounds must be positive integers.")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    ds = load_mnist_format("fashion-mnist")
    common = dict(task="classification", epochs=args.epochs, optimizer="sgd", lr=0.1,
                  momentum=0.9, batch_size=128, seed=args.seed)
    models, lam_per_sample = {}, {}
    for target in TARGETS:
        net = mlp(784, [300, 100], 10, seed=args.seed)
        res = fit_sparse(net, ds.X_train, ds.y_train, zero_fraction=target, mode="warm",
                         grad_samples=10_000, **common)
        lam_per_sample[target] = res.lam / ds.X_train.shape[0]
        models[("ℓ1 (warm-sub)", target)] = net
        res = gradual_magnitude_pruning(mlp(784, [300, 100], 10, seed=args.seed), ds.X_train,
                                        ds.y_train, zero_fraction=target, **common)
        models[("gmp", target)] = res.model
        print(f"trained {target:.0%}", flush=True)

    @torch.no_grad()
    def objective(net, lam: float) -> tuple[float, float, float]:
        """(mean training loss, loss + λ/N·Σ‖W_k‖₁, the same after ``rebalance``)."""
        loss = sum(float(fidelity(net(ds.X_train[i:i + 8192]), ds.y_train[i:i + 8192],
                                  "classification")) for i in range(0, ds.n_train, 8192))
        loss /= ds.n_train

        def l1(m):
            return sum(float(layer.weight.abs().sum()) for _, layer in penalised_layers(m))

        balanced = copy.deepcopy(net)  # the same function, the smallest penalty per unit
        rebalance(balanced, {n: 1.0 for n, _ in penalised_layers(net)})
        return loss, loss + lam * l1(net), loss + lam * l1(balanced)

    gen = torch.Generator().manual_seed(args.seed)
    info, timing = [], []
    for (method, target), net in models.items():
        net.eval()
        small = compact(net)
        info.append((method, target, sparsity(net).nnz, metric(net, ds.X_test, ds.y_test,
                     "classification"), *objective(net, lam_per_sample[target]),
                     " / ".join(str(u.live) for u in unit_report(net)),
                     "-".join(map(str, [784, *small.hidden, 10])), sparsity(small).total))
        for batch in BATCHES:
            x = torch.randn(batch, 784, generator=gen)
            variants = {"as trained": net, "to_sparse": to_sparse(net, batch_size=batch),
                        "compact": small, "compact+to_sparse": to_sparse(small, batch_size=batch)}
            with torch.no_grad():
                ref = net(x)
                for m in variants.values():
                    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-4)
            fns = {k: torch.no_grad()(lambda m=m: m(x)) for k, m in variants.items()}
            t = time_us(fns, args.threads, args.rounds, args.min_run_time)
            timing.append((method, target, batch, t))
            print(method, target, batch, {k: round(v, 1) for k, v in t.items()}, flush=True)

    lines = ["| method | zeros | nnz | test acc | train loss | ℓ1 objective (λ/N) | "
             "rebalanced | live units | compact architecture | compact weights (dense) |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for method, target, nnz, acc, loss, obj, obj_b, live, arch, total in info:
        lines.append(f"| {method} | {target:.0%} | {nnz:,} | {acc:.4f} | {loss:.4f} | "
                     f"{obj:.4f} ({lam_per_sample[target]:.3g}) | {obj_b:.4f} | {live} | "
                     f"{arch} | {total:,} |")
    t_lines = ["| method | zeros | batch | as trained µs | to_sparse µs | compact µs | "
               "compact+to_sparse µs | as trained / best |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method, target, batch, t in timing:
        best = min(t.values())
        t_lines.append(f"| {method} | {target:.0%} | {batch} | {t['as trained']:.1f} | "
                       f"{t['to_sparse']:.1f} | {t['compact']:.1f} | "
                       f"{t['compact+to_sparse']:.1f} | {t['as trained'] / best:.1f}× |")
    table, t_table = "\n".join(lines), "\n".join(t_lines)
    print(table + "\n\n" + t_table)
    if args.write:
        machine = machine_description(args.threads)
        if hasattr(os, "getloadavg"):
            machine["load average (1 min) at start / end"] = (
                f"{load0:.2f} / {os.getloadavg()[0]:.2f}")
        mlines = "\n".join(f"- {k}: {v}" for k, v in machine.items())
        text = f"""# ℓ1 against gradual magnitude pruning at the same number of nonzeros

Generated by `python benchmarks/l1_vs_magnitude.py {' '.join(sys.argv[1:])}`.

LeNet-300-100 on Fashion-MNIST (60,000 training images, {args.epochs} epochs, SGD lr 0.1
momentum 0.9, batch 128, cosine decay), trained to each zero fraction by `fit_sparse` (warm
mode, γ from a 10k subsample) and by gradual magnitude pruning. *train loss*: mean
cross-entropy on the training set. *ℓ1 objective*: train loss + (λ/N)·Σ‖W_k‖₁ at the λ the
selector chose for that target (in brackets): the function the ℓ1 run minimises, evaluated on
both networks; *rebalanced*: the same after `l1sparse.compact.rebalance`, which rescales every
hidden unit to its smallest penalty without changing the network's function. *live units*:
hidden units of
the two hidden layers (of 300 / 100) with a nonzero incoming and outgoing weight. *compact*:
`l1sparse.compact.compact`, the same function as a narrower dense MLP (outputs checked equal
within 1e-4). Latency of one forward pass under `torch.no_grad()`: median of {args.rounds}
interleaved rounds of `torch.utils.benchmark.Timer.blocked_autorange`.

## Machine

{mlines}

## Models

{table}

## Latency

{t_table}
"""
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
