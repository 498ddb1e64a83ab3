"""Time per certified convex selection (l1sparse.convex.select), n ≤ 10,000 and p ≤ 100.

For each data set and target support size k: the seconds of one `select` (the paper's λ-choice
on certified solves, then λ moved to the geometric middle of the interval where the support has
k elements), the number of certified solves, the certificate (largest first-order violation
relative to λ) and whether the count is exact. Data: bundled scikit-learn sets with their
features as given (diabetes unscaled, breast cancer, wine, iris) and synthetic correlated,
badly scaled Gaussian designs. The goal is under a second per selection.

    python benchmarks/convex_bench.py            # prints the table, writes benchmarks/CONVEX.md
    python benchmarks/convex_bench.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from l1sparse.convex import select

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/

HERE = Path(__file__).resolve().parent


def _synthetic(n: int, p: int, task: str, seed: int = 0):
    """Correlated (ρ = 0.5 between neighbours) features with scales from 0.1 to 1,700; a
    sparse truth (10 % of the features); labels from 3 classes for classification."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, p))
    Z[:, 1:] = 0.5 * Z[:, :-1] + np.sqrt(0.75) * Z[:, 1:]
    scales = np.geomspace(0.1, 1700, p)
    X = Z * scales
    m = max(1, p // 10)
    if task == "regression":
        beta = np.zeros(p)
        beta[rng.choice(p, m, replace=False)] = rng.standard_normal(m)
        y = Z @ beta + 0.5 * rng.standard_normal(n)
        return X, y
    B = np.zeros((3, p))
    for c in range(3):
        B[c, rng.choice(p, m, replace=False)] = rng.standard_normal(m)
    logits = Z @ B.T + rng.gumbel(size=(n, 3))
    return X, logits.argmax(1)


def _cases(quick: bool):
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

    X, y = load_diabetes(return_X_y=True, scaled=False)
    yield "diabetes (unscaled)", "regression", X, y, [3, 5, 7, 9]
    X, y = load_breast_cancer(return_X_y=True)
    yield "breast cancer (0/1 target)", "regression", X, y.astype(float), [5, 10, 20]
    for n, p in ([(1000, 20), (10_000, 100)] if quick else [(1000, 20), (10_000, 20),
                                                           (1000, 100), (10_000, 100)]):
        X, y = _synthetic(n, p, "regression")
        yield f"synthetic n={n} p={p}", "regression", X, y, [p // 10, p // 4, p // 2]
    X, y = load_iris(return_X_y=True)
    yield "iris (3 classes)", "classification", X, y, [2, 4]
    X, y = load_wine(return_X_y=True)
    yield "wine (3 classes, unscaled)", "classification", X, y, [3, 6, 10]
    for n, p in ([(1000, 20)] if quick else [(1000, 20), (10_000, 20), (10_000, 100)]):
        X, y = _synthetic(n, p, "classification")
        yield f"synthetic n={n} p={p}", "classification", X, y, [p // 4, p]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=1, help="time each selection this many "
                   "times and report the fastest")
    p.add_argument("--quick", action="store_true", help="fewer synthetic sizes")
    p.add_argument("--out", default=str(HERE / "CONVEX.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, task, X, y, ks in _cases(args.quick):
        for k in ks:
            best = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                sel = select(X, y, k, task=task)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            lo, hi = sel.interval if sel.interval else (float("nan"), float("nan"))
            row = (name, task, X.shape[0], X.shape[1], k, sel.nnz, sel.converged,
                   sel.lam, lo, hi, sel.solves, sel.certificate.max_violation, best)
            rows.append(row)
            print(f"{name:<28} {task:<14} n={X.shape[0]:<6} p={X.shape[1]:<4} k={k:<4} "
                  f"nnz={sel.nnz:<4} exact={sel.converged!s:<5} lambda={sel.lam:<12.5g} "
                  f"solves={sel.solves:<4} violation={sel.certificate.max_violation:<9.2g} "
                  f"{best:.3f}s", flush=True)
    machine = machine_description(torch.get_num_threads())
    lines = [
        "# Certified convex selections: time per selection",
        "",
        "Produced by `python benchmarks/convex_bench.py` "
        f"(repeat {args.repeat}: the fastest of that many). One row per data set and target "
        "support size k: `l1sparse.convex.select(X, y, k, task=...)` with tol 0 (exactly k), "
        "its λ (summed-loss scale), the interval of λ where the support has k elements "
        "(regression: exact, from the piecewise-linear path; classification: by bisection "
        "between certified solves, to 0.1 %), the number of certified solves, the largest "
        "first-order violation at the returned solution relative to λ (certified when ≤ 1e-6) "
        "and the wall time, scikit-learn imports excluded (the first case pays them). "
        "Features are as given; the synthetic ones are correlated "
        "(ρ = 0.5 between neighbours) with scales from 0.1 to 1,700.",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()) + ".",
        "",
        "| data | task | n | p | k | nnz | exact | λ | interval | solves | violation/λ | s |",
        "|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for (name, task, n, pp, k, nnz, ok, lam, lo, hi, solves, viol, sec) in rows:
        lines.append(f"| {name} | {task} | {n} | {pp} | {k} | {nnz} | {'yes' if ok else 'NO'} "
                     f"| {lam:.5g} | [{lo:.5g}, {hi:.5g}] | {solves} | {viol:.2g} | "
                     f"{sec:.3f} |")
    slow = [r for r in rows if r[-1] >= 1.0]
    lines += ["", f"{len(rows) - len(slow)} of {len(rows)} selections took under a second"
              + (": the slower ones are " + ", ".join(f"{r[0]} k={r[4]} ({r[-1]:.2f}s)"
                                                       for r in slow) if slow else "") + "."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
