"""How much training the λ selection costs: outer iterations and epochs per target and mode.

Runs `fit_sparse` on a built-in data set for several global zero-fraction targets, in `warm`
and `retrain` mode, and prints a table (written to --out as Markdown too). The cost is compared
with one training of `--epochs` epochs: `epochs_total / epochs` full trainings.

    python benchmarks/selection.py                      # mnist-5k, LeNet-300-100
    python benchmarks/selection.py --targets 0.9 --modes warm
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from l1sparse import fit_sparse, mlp
from l1sparse.data import load_dataset
from l1sparse.losses import metric

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist-5k")
    p.add_argument("--hidden", default="300,100")
    p.add_argument("--targets", default="0.8,0.9,0.95,0.98")
    p.add_argument("--modes", default="warm,retrain")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--tol", type=float, default=0.005)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/SELECTION.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # first-constructor cost, not timed

    data = load_dataset(args.data, task="classification", seed=args.seed)
    hidden = [int(h) for h in args.hidden.split(",") if h]
    rows = []
    header = ("| mode | target zeros | attained | met | outer iterations | epochs trained | "
              "full trainings | test accuracy | seconds |")
    print(header)
    print("|---" * 9 + "|")
    for mode in args.modes.split(","):
        for target in (float(t) for t in args.targets.split(",")):
            net = mlp(data.n_features, hidden, data.n_outputs, seed=args.seed)
            t0 = time.perf_counter()
            res = fit_sparse(net, data.X_train, data.y_train, task="classification",
                             zero_fraction=target, tol=args.tol, mode=mode, epochs=args.epochs,
                             seed=args.seed, max_outer=40, optimizer=args.optimizer, lr=args.lr,
                             momentum=args.momentum)
            seconds = time.perf_counter() - t0
            acc = metric(net, data.X_test, data.y_test, "classification")
            row = (f"| {mode} | {target:.2f} | {res.target.attained(res.nnz):.4f} | "
                   f"{'yes' if res.converged else 'NO'} | {res.outer_iterations} | "
                   f"{res.epochs_total} | {res.epochs_total / args.epochs:.2f} | {acc:.4f} | "
                   f"{seconds:.1f} |")
            print(row, flush=True)
            rows.append(row)
    text = "\n".join([
        "# Cost of the λ selection",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in
                                machine_description(torch.get_num_threads()).items()) + ".",
        "",
        f"Data `{args.data}` ({data.n_train} train / {data.n_test} test), "
        f"MLP {data.n_features}-{args.hidden}-{data.n_outputs}, optimizer {args.optimizer} lr "
        f"{args.lr} momentum {args.momentum}, batch 128, "
        f"one training = {args.epochs} epochs, tolerance {args.tol} (zero fraction).",
        "",
        "Command: `python benchmarks/selection.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()) + "`",
        "",
        header, "|---" * 9 + "|", *rows, ""])
    Path(args.out).write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
