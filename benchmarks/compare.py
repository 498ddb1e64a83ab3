"""The side-by-side benchmark suite: l1sparse at a target sparsity against the usual alternatives.

For each data set, seed and target (zero fractions 90/95/98 % of the penalised weights, and on
the small sets one per-layer target), in one process and from the same initial weights:

- ``default``: ``fit_sparse(...)`` with its defaults (warm mode, penalty "auto" = reweighted ℓ1
  stepped by the SparsityScheduler);
- ``l1``: the same with ``penalty="l1"`` (plain ℓ1, warm);
- ``retrain``: ``fit_sparse(mode="retrain")``, the paper's scheme (plain ℓ1; a full training of
  the same length per outer iteration);
- ``gmp``: gradual magnitude pruning, cubic schedule over the first 70 % of the run
  (:func:`l1sparse.baselines.gradual_magnitude_pruning`);
- ``prune-ft``: dense training for E − F epochs, global magnitude pruning, F = max(1, E/5)
  epochs of fine-tuning with the mask kept (Adam 1e-3), E epochs in all
  (:func:`l1sparse.baselines.prune_and_finetune`);
- ``dense``: one dense training of the same length (λ = 0), the floor of the cost ratios and
  the dense accuracy.

Budgets: Fashion-MNIST 10 epochs for every method. Elsewhere ``fit_sparse``'s default budget
(20 epochs but at least 3,000 optimizer steps, :func:`l1sparse.select.resolve_steps`) given as
``steps``; GMP, prune + fine-tune, the dense floor and each training of retrain mode get
E = round(steps / batches per epoch) epochs.

Usage::

    python benchmarks/compare.py --quick      # a few minutes: digits + wine (2 seeds), Fashion 90 % (1 seed, 3 epochs)
    python benchmarks/compare.py              # the full suite -> benchmarks/RESULTS.md
    python benchmarks/compare.py --sets digits,wine --seeds 3 --out /tmp/x.md
    python benchmarks/compare.py --render     # rebuild the markdown from the saved records

Records are saved per data set as JSON next to the markdown (``<out stem>_records/``) after
every seed, and the markdown is rewritten from all saved records each time, so a partial run
leaves a usable table.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys
import time

import torch

from l1sparse.baselines import gradual_magnitude_pruning, prune_and_finetune
from l1sparse.compact import unit_report
from l1sparse.losses import metric
from l1sparse.models import mlp
from l1sparse.select import fit_sparse, resolve_steps
from l1sparse.sparsity import sparsity
from l1sparse.penalty import layer_names
from l1sparse.train import batches_per_epoch, make_optimizer, train_steps

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("default", "l1", "retrain", "gmp", "prune-ft")
TOL = 0.005  # the tolerance of fit_sparse's zero-fraction targets (0.5 pp), used for baselines
BATCH = 128

# name: (loader, task, hidden, per-layer target)
SMALL = {
    "digits": ("load_digits", "classification", [64, 32], [0.95, 0.8, 0.5]),
    "wine": ("load_wine", "classification", [32], [0.95, 0.5]),
    "breast_cancer": ("load_breast_cancer", "classification", [64, 32], [0.95, 0.8, 0.5]),
    "diabetes": ("load_diabetes", "regression", [32, 16], [0.95, 0.8, 0.5]),
}
ALL_SETS = ("fashion-mnist", "mnist-5k") + tuple(SMALL)


# --------------------------------------------------------------------------- data


def small_split(name: str, seed: int):
    """A stratified 75/25 split by ``seed``; features (and a regression target) standardised
    with the training statistics."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    loader, task, _, _ = SMALL[name]
    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=0.25, random_state=seed,
        stratify=y if task == "classification" else None)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd == 0] = 1.0
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    Xtr, Xte = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xte, dtype=torch.float32)
    if task == "regression":
        m, s = ytr.mean(), ytr.std()
        ytr = torch.tensor((ytr - m) / s, dtype=torch.float32).view(-1, 1)
        yte = torch.tensor((yte - m) / s, dtype=torch.float32).view(-1, 1)
    else:
        ytr, yte = torch.tensor(ytr, dtype=torch.int64), torch.tensor(yte, dtype=torch.int64)
    return Xtr, ytr, Xte, yte


_CACHE: dict = {}


def dataset(name: str, seed: int):
    """(X, y, X_test, y_test, task, hidden, out, per-layer target or None)."""
    if name in SMALL:
        _, task, hidden, per_layer = SMALL[name]
        X, y, Xt, yt = small_split(name, seed)
        out = 1 if task == "regression" else int(y.max()) + 1
        return X, y, Xt, yt, task, hidden, out, per_layer
    from l1sparse.data import load_dataset

    if name not in _CACHE:
        _CACHE[name] = load_dataset(name, task="classification")
    ds = _CACHE[name]
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test, "classification", [300, 100], 10, None


# --------------------------------------------------------------------------- one record


class Clock:
    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def describe(model, X, y, task) -> dict:
    s = sparsity(model)
    return {"metric": metric(model, X, y, task), "zeros": s.zero_fraction,
            "layer_zeros": [layer.zero_fraction for layer in s.layers],
            "live": [u.live for u in unit_report(model)]}


def dense_training(model, X, y, task, steps, seed) -> None:
    opt = make_optimizer(model, "sgd", lr=0.1, lambdas={k: 0.0 for k in layer_names(model)},
                         n_samples=X.shape[0], momentum=0.9)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.1 * 0.05)
    train_steps(model, (X, y), opt, task=task, steps=steps, batch_size=BATCH,
                generator=torch.Generator().manual_seed(seed), after_step=cos.step)


def run_cell(name: str, seed: int, methods: list[str], targets: list, epochs_override,
             log) -> list[dict]:
    """All methods at every target for one data set and seed; the dense floor first."""
    X, y, Xt, yt, task, hidden, out, per_layer_target = dataset(name, seed)
    n = X.shape[0]
    bpe = batches_per_epoch(n, BATCH)
    if name == "fashion-mnist":
        E = epochs_override or 10
        steps = E * bpe
    else:
        steps = resolve_steps(bpe) if epochs_override is None else epochs_override * bpe
        E = max(1, round(steps / bpe))
    F = max(1, round(E / 5))

    def factory():
        return mlp(X.shape[1], hidden, out, seed=seed)

    common = dict(task=task, seed=seed, batch_size=BATCH)
    records = []

    def rec(method, target_label, target, model, wall, cpu, **extra):
        r = {"set": name, "seed": seed, "method": method, "target": target_label,
             "target_value": target, "wall": wall, "cpu": cpu, "n_train": n,
             "steps": steps, "epochs": E, "task": task, **describe(model, Xt, yt, task), **extra}
        records.append(r)
        log(f"{name} seed {seed} {method:>8} {target_label:>14}: zeros {r['zeros']:.4f} "
            f"metric {r['metric']:.4f} live {r['live']} {wall:.1f}s wall {cpu:.1f}s cpu "
            + " ".join(f"{k}={v}" for k, v in extra.items() if k in ("met", "warnings_n",
                                                                         "outer")))

    # the dense floor: fit_sparse's own loop (train_steps, the same proximal SGD at l1 = 0 and
    # the same cosine decay) for the same number of steps, without the SparsityScheduler
    dense = factory()
    clock = Clock()
    dense_training(dense, X, y, task, steps, seed)
    rec("dense", "—", None, dense, *clock.read(), met=None)

    n_layers = len(hidden) + 1
    for t in targets:
        if t == "layer":
            if per_layer_target is None:
                continue
            label = "[" + ", ".join(f"{v:g}" for v in per_layer_target) + "]"
            sizes = [m.weight.numel() for m in factory().modules()
                     if isinstance(m, torch.nn.Linear)]
            assert len(sizes) == n_layers == len(per_layer_target)
            glob_equiv = sum(f * s for f, s in zip(per_layer_target, sizes)) / sum(sizes)
            tkw = {"layer_zero_fraction": per_layer_target}
        else:
            label, glob_equiv, tkw = f"{t:.0%}", t, {"zero_fraction": t}
        for method in methods:
            if method in ("default", "l1", "retrain"):
                model = factory()
                clock = Clock()
                kw = dict(tkw, **common)
                if method == "retrain":
                    res = fit_sparse(model, X, y, mode="retrain", epochs=E, **kw)
                else:
                    res = fit_sparse(model, X, y, steps=steps,
                                     penalty="auto" if method == "default" else "l1", **kw)
                wall, cpu = clock.read()
                rec(method, label, glob_equiv, model, wall, cpu, met=bool(res.converged),
                    warnings_n=len(res.warnings), warnings=list(res.warnings),
                    outer=res.outer_iterations, epochs_total=res.epochs_total,
                    lam=res.lam if isinstance(res.lam, float) else list(res.lam))
            elif method == "gmp":
                clock = Clock()
                res = gradual_magnitude_pruning(factory(), X, y, zero_fraction=glob_equiv,
                                                epochs=E, **common)
                wall, cpu = clock.read()
                rec(method, label, glob_equiv, res.model, wall, cpu,
                    met=abs(res.zero_fraction - glob_equiv) <= TOL + 1e-12,
                    epochs_total=res.epochs_total)
            elif method == "prune-ft":
                clock = Clock()
                res = prune_and_finetune(factory(), X, y, zero_fraction=glob_equiv,
                                         epochs=max(1, E - F), finetune_epochs=F,
                                         finetune_optimizer="adam", finetune_lr=1e-3, **common)
                wall, cpu = clock.read()
                rec(method, label, glob_equiv, res.model, wall, cpu,
                    met=abs(res.zero_fraction - glob_equiv) <= TOL + 1e-12,
                    epochs_total=res.epochs_total)
    return records


# --------------------------------------------------------------------------- the report


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format(statistics.stdev(values), fmt)}"


def aggregate(records: list[dict]) -> dict:
    """(set, target, method) -> summary; cost ratios over the mean dense time of the set."""
    dense_time = {}
    for r in records:
        if r["method"] == "dense":
            dense_time.setdefault(r["set"], []).append((r["wall"], r["cpu"]))
    groups: dict = {}
    for r in records:
        groups.setdefault((r["set"], r["target"], r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        d = dense_time.get(key[0])
        dw = statistics.fmean(x[0] for x in d) if d else float("nan")
        dc = statistics.fmean(x[1] for x in d) if d else float("nan")
        mets = [x["met"] for x in rs if x.get("met") is not None]
        out[key] = {
            "n": len(rs), "task": rs[0]["task"],
            "metric": [x["metric"] for x in rs], "zeros": [x["zeros"] for x in rs],
            "layer_zeros": [statistics.fmean(col) for col in zip(*[x["layer_zeros"] for x in rs])],
            "live": [statistics.fmean(col) for col in zip(*[x["live"] for x in rs])],
            "met": (sum(mets), len(mets)) if mets else None,
            "warn": sum(1 for x in rs if x.get("warnings_n")),
            "warn_text": sorted({w.split(";")[0] for x in rs for w in x.get("warnings", [])}),
            "cost_cpu": statistics.fmean(x["cpu"] for x in rs) / dc,
            "cost_wall": statistics.fmean(x["wall"] for x in rs) / dw,
            "outer": [x["outer"] for x in rs if "outer" in x],
            "epochs": rs[0]["epochs"], "steps": rs[0]["steps"], "n_train": rs[0]["n_train"],
            "seeds": sorted(x["seed"] for x in rs),
        }
    return out


def target_order(label: str) -> tuple:
    return (0, 0) if label == "—" else (1, float(label.rstrip("%"))) if label.endswith("%") \
        else (2, 0)


def fmt_tables(agg: dict, sets: list[str]) -> str:
    parts = []
    for s in sets:
        keys = [k for k in agg if k[0] == s]
        if not keys:
            continue
        a0 = agg[keys[0]]
        reg = a0["task"] == "regression"
        mname = "test MSE (standardised y)" if reg else "test accuracy"
        order = {m: i for i, m in enumerate(("dense",) + METHODS)}
        keys.sort(key=lambda k: (target_order(k[1]), order.get(k[2], 99)))
        seeds = max(agg[k]["n"] for k in keys)
        parts.append(f"### {s}\n\n{a0['n_train']} training samples; {a0['epochs']} epochs "
                     f"= {a0['steps']} steps of fit_sparse (batch {BATCH}); up to {seeds} "
                     "seeds; mean ± std over seeds.\n")
        parts.append(f"| target zeros | method | seeds | {mname} | attained zeros | zeros per "
                     "layer | met (seeds) | warnings (seeds) | live units per hidden layer | "
                     "cost × dense (CPU) | × dense (wall) | outer its |")
        parts.append("|---|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|")
        for k in keys:
            a = agg[k]
            met = "—" if a["met"] is None else f"{a['met'][0]}/{a['met'][1]}"
            warn = "—" if k[2] in ("dense", "gmp", "prune-ft") else f"{a['warn']}/{a['n']}"
            outer = f"{statistics.fmean(a['outer']):.1f}" if a["outer"] else "—"
            parts.append(
                f"| {k[1]} | {k[2]} | {a['n']} | {spread(a['metric'], '.4f')} | "
                f"{spread([100 * z for z in a['zeros']], '.2f')} % | "
                f"{' / '.join(f'{100 * z:.1f}' for z in a['layer_zeros'])} | {met} | {warn} | "
                f"{' / '.join(f'{u:.1f}' for u in a['live'])} | {a['cost_cpu']:.2f} | "
                f"{a['cost_wall']:.2f} | {outer} |")
        texts = sorted({t for k in keys for t in agg[k]["warn_text"]})
        if texts:
            parts.append("\nWarnings seen: " + "; ".join(f"“{t}”" for t in texts) + ".")
        parts.append("")
    return "\n".join(parts)


def fmt_targets(agg: dict, sets: list[str]) -> str:
    """Issue 12's targets, for the default, from the aggregated rows."""
    lines = ["| data set | target zeros | check | default | reference | verdict |",
             "|---|---|---|---:|---:|---|"]
    n_met = n_all = 0

    def add(s, t, check, value, ref, ok):
        nonlocal n_met, n_all
        n_all += 1
        n_met += bool(ok)
        lines.append(f"| {s} | {t} | {check} | {value} | {ref} | "
                     f"{'met' if ok else '**missed**'} |")

    for s in sets:
        targets = sorted({k[1] for k in agg if k[0] == s and k[2] == "default"}, key=target_order)
        for t in targets:
            d = agg.get((s, t, "default"))
            g = agg.get((s, t, "gmp"))
            p = agg.get((s, t, "prune-ft"))
            if d is None:
                continue
            if d["met"] is not None:
                add(s, t, "target met on every seed", f"{d['met'][0]}/{d['met'][1]}", "—",
                    d["met"][0] == d["met"][1])
            dm = statistics.fmean(d["metric"])
            if g is not None:
                gm = statistics.fmean(g["metric"])
                note = " (GMP at the equivalent global fraction)" if not t.endswith("%") else ""
                if d["task"] == "regression":
                    add(s, t, "test MSE ≤ 1.05 × GMP's" + note, f"{dm:.4f}",
                        f"{1.05 * gm:.4f} (GMP {gm:.4f})", dm <= 1.05 * gm)
                elif s == "fashion-mnist":
                    margin = 0.0 if t == "98%" else 0.005
                    add(s, t, "test acc ≥ GMP" + (f" − {100 * margin:g} pt" if margin else ""),
                        f"{dm:.4f}",
                        f"{gm - margin:.4f} (GMP {gm:.4f})", dm >= gm - margin - 1e-12)
                else:
                    add(s, t, "test acc ≥ GMP − 1 pt" + note, f"{dm:.4f}",
                        f"{gm - 0.01:.4f} (GMP {gm:.4f})", dm >= gm - 0.01 - 1e-12)
            elif p is not None and d["task"] == "regression":
                pm = statistics.fmean(p["metric"])
                add(s, t, "test MSE ≤ 1.05 × prune-ft's", f"{dm:.4f}", f"{1.05 * pm:.4f}",
                    dm <= 1.05 * pm)
            add(s, t, "cost ≤ 1.3 × dense (CPU)", f"{d['cost_cpu']:.2f}", "1.30",
                d["cost_cpu"] <= 1.3)
    lines.append("")
    lines.append(f"{n_met} of {n_all} checks met.")
    return "\n".join(lines)


def write_markdown(path: str, records: list[dict], meta: dict) -> None:
    sets = [s for s in ALL_SETS if any(r["set"] == s for r in records)]
    agg = aggregate(records)
    mlines = "\n".join(f"- {k}: {v}" for k, v in meta["machine"].items())
    status = meta["status"]
    text = f"""# The side-by-side benchmark suite (issue 12, item 6)

Generated by `{meta['command']}` ({status}). Every number below comes from the records of
that run (`{os.path.relpath(meta['records'], HERE)}/`), rebuilt with `--render`.

**Methods**, in one process per data set, from the same initial weights (seed) and batch order:
`default` = `fit_sparse(...)` as shipped (warm mode, penalty "auto" = reweighted ℓ1 steered by
the SparsityScheduler); `l1` = the same with `penalty="l1"`; `retrain` = `fit_sparse(mode=
"retrain")` (the paper's scheme, plain ℓ1, a full training per outer iteration); `gmp` = gradual
magnitude pruning (cubic schedule to the target over the first 70 % of the run, a global prune
every 100 steps); `prune-ft` = dense training for E − F epochs, global magnitude pruning, then F
= max(1, round(E/5)) epochs of fine-tuning with the mask kept (Adam, lr 1e-3), E epochs in
all; `dense` = one dense training of the same number of steps (λ = 0) in `fit_sparse`'s own
loop (`train_steps`, the same proximal SGD and cosine decay, no SparsityScheduler), the floor. Optimizer everywhere: SGD,
momentum 0.9, lr 0.1, cosine decay to 5 %, batch {BATCH}.

**Budgets.** Fashion-MNIST: 10 epochs for every method. mnist-5k and the scikit-learn sets:
`fit_sparse`'s default budget (20 epochs but at least 3,000 optimizer steps), passed as
`steps`; the baselines, the dense floor and each training of retrain mode get E = round(steps /
batches per epoch) epochs, i.e. the same number of optimizer steps (± one batch).

**Columns.** *attained zeros*: exact zeros among all weight matrices (biases excluded).
*met*: seeds on which the count is within the tolerance (0.5 pp of the weights, per layer for a
per-layer target; for the baselines |attained − target| ≤ 0.5 pp of the global fraction).
*warnings*: seeds on which `fit_sparse` returned a non-empty `warnings` (a dead layer or a
network within 5 points of the trivial predictor). *live units*: hidden units with a nonzero
incoming and outgoing weight (`l1sparse.compact.unit_report`), mean over seeds. *cost*: mean
time of the method over the mean time of the dense floor of the same data set, same process;
CPU time (`time.process_time`, one thread) is the primary measure because the machine is shared
with other jobs; the wall-clock ratio is beside it. *outer its*: outer iterations (scheduler
records in warm mode, trainings in retrain mode).

**Per-layer targets** are given to `fit_sparse` as `layer_zero_fraction`; the baselines prune
globally, so they are run at the equivalent global fraction (the same total number of zeros)
and their *met* is judged against that global fraction.

**Small data sets**: scikit-learn's bundled `load_digits` (64,32 hidden), `load_wine` (32),
`load_breast_cancer` (64,32), `load_diabetes` (regression, 32,16); a seeded stratified 75/25
split per seed (the seed also sets the initial weights and batch order), features
standardised with the training statistics; for diabetes the target too, and the test MSE is on
that standardised scale (1.0 ≈ predicting the training mean).

## Machine

{mlines}

## Results

{fmt_tables(agg, sets)}
## Targets (issue 12), for the default

{fmt_targets(agg, sets)}
{meta.get('notes', '')}
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="digits + wine with 2 seeds, Fashion-MNIST 90 %% 1 seed 3 epochs")
    parser.add_argument("--sets", default=None, help=f"comma-separated subset of {ALL_SETS}")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per data set (Fashion/mnist-5k 3, small sets 5; quick 2/1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (records go to their own file, merged when "
                             "rendering: a later invocation can add seeds)")
    parser.add_argument("--tag", default="", help="a suffix for the records file (so that "
                        "another invocation on the same set adds records instead of replacing)")
    parser.add_argument("--methods", default=None,
                        help=f"subset of {METHODS} (all; retrain is skipped on Fashion-MNIST "
                             "unless named here)")
    parser.add_argument("--targets", default="0.9,0.95,0.98,layer",
                        help="zero fractions and 'layer' for the per-layer target")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the budget in epochs (Fashion 10; quick 3)")
    parser.add_argument("--out", default=None,
                        help="markdown (benchmarks/RESULTS.md; quick RESULTS_QUICK.md)")
    parser.add_argument("--render", action="store_true", help="only rebuild the markdown")
    parser.add_argument("--records", default=None,
                        help="folder of the JSON records (default: <out without .md>_records)")
    parser.add_argument("--notes", default="", help="a markdown file appended to the report")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join(HERE, "RESULTS_QUICK.md" if args.quick else "RESULTS.md")
    rec_dir = args.records or os.path.splitext(args.out)[0] + "_records"
    os.makedirs(rec_dir, exist_ok=True)
    torch.set_num_threads(args.threads)
    machine = machine_description(args.threads)
    cmd = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    notes = open(args.notes, encoding="utf-8").read() if args.notes else ""

    def load_all() -> list[dict]:
        out = []
        for p in sorted(glob.glob(os.path.join(rec_dir, "*.json"))):
            with open(p, encoding="utf-8") as f:
                blob = json.load(f)
            out.extend(blob["records"])
            meta_cmd.setdefault(p, blob.get("command", ""))
        return out

    meta_cmd: dict = {}
    if args.render:
        records = load_all()
        cmds = sorted(set(meta_cmd.values()))
        write_markdown(args.out, records, {"machine": machine, "command": "; ".join(cmds),
                                           "status": "rendered from saved records",
                                           "records": rec_dir, "notes": notes})
        print(f"wrote {args.out}")
        return 0

    if args.quick:
        plan = [("digits", 2, None), ("wine", 2, None), ("fashion-mnist", 1, 3)]
        targets_by_set = {"fashion-mnist": [0.9]}
    else:
        sets = args.sets.split(",") if args.sets else list(ALL_SETS)
        plan = [(s, args.seeds or (3 if s in ("fashion-mnist", "mnist-5k") else 5), args.epochs)
                for s in sets]
        targets_by_set = {}
    default_targets = [t if t == "layer" else float(t) for t in args.targets.split(",")]
    # pay the one-off costs (lazy imports, first kernels) before anything is timed
    dense_training(mlp(8, [8], 2, seed=0), torch.randn(256, 8), torch.randint(0, 2, (256,)),
                   "classification", 20, 0)
    t_script = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{(time.perf_counter() - t_script) / 60:5.1f} min] {msg}", flush=True)

    for s, n_seeds, ep in plan:
        if args.methods:
            methods = args.methods.split(",")
        else:
            methods = [m for m in METHODS if not (m == "retrain" and s == "fashion-mnist")]
        targets = targets_by_set.get(s, default_targets)
        records = []
        suffix = (f".from{args.first_seed}" if args.first_seed else "") + (
            f".{args.tag}" if args.tag else "")
        path = os.path.join(rec_dir, f"{s}{suffix}.json")
        for seed in range(args.first_seed, args.first_seed + n_seeds):
            records += run_cell(s, seed, methods, targets, ep, log)
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"set": s, "command": cmd, "records": records}, f, indent=1)
            write_markdown(args.out, load_all(), {
                "machine": machine, "command": cmd, "records": rec_dir, "notes": notes,
                "status": f"**partial**: {(time.perf_counter() - t_script) / 60:.1f} min so far"})
    wall = time.perf_counter() - t_script
    if hasattr(os, "getloadavg"):
        machine["load average (1 min) at the end"] = f"{os.getloadavg()[0]:.2f}"
    write_markdown(args.out, load_all(), {
        "machine": machine, "command": cmd, "records": rec_dir, "notes": notes,
        "status": f"complete; this invocation took {wall / 60:.1f} min"})
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
