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
- ``torch-ao``: ``torch.ao.pruning``'s ``WeightNormSparsifier`` (unstructured) on its ``CubicSL``
  schedule over the same window and tensors as ``gmp``, uniform per tensor
  (:func:`l1sparse.baselines_ao.torch_ao_pruning`);
- ``dense``: one dense training of the same length (λ = 0), the floor of the cost ratios and
  the dense accuracy.

Architectures on Fashion-MNIST (issue 25): ``fashion-mnist`` is LeNet-300-100;
``fashion-resnet`` a residual CNN with BatchNorm (:func:`l1sparse.models.resnet_small`) and
``fashion-vit`` a small Vision Transformer (:func:`l1sparse.models.vit_small`), every method on
the ViT with Adam (ProxAdam; at l1 = 0 for the baselines and the dense floor). Their width, the
training subset and the epochs come from ``--size`` (:data:`SIZES`): ``gpu`` is the issue's
size (ResNet 271k, ViT 247k weights, all 60,000 images), ``cpu`` a smaller one for this
machine, ``quick`` (with ``--quick``) a tiny one that only shows the pipeline works. Models are
evaluated in ``eval()`` mode (BatchNorm running statistics) without gradients.

Budgets: Fashion-MNIST 10 epochs for every method (the architectures: :data:`SIZES`).
Elsewhere ``fit_sparse``'s default budget (20 epochs but at least 3,000 optimizer steps, :func:`l1sparse.select.resolve_steps`) given as
``steps``; GMP, prune + fine-tune, the dense floor and each training of retrain mode get
E = round(steps / batches per epoch) epochs.

Usage::

    python benchmarks/compare.py --quick      # minutes: LeNet, tiny ResNet and ViT, 90 %, 1 seed
    python benchmarks/compare.py              # the full suite -> benchmarks/RESULTS.md
    python benchmarks/compare.py --sets fashion-resnet,fashion-vit --size gpu --device cuda
    python benchmarks/compare.py --sets digits,wine --seeds 3 --out /tmp/x.md
    python benchmarks/compare.py --render     # rebuild the markdown from the saved records

Records are saved per data set as JSON next to the markdown (``<out stem>_records/``) after
every seed, and the markdown is rewritten from all saved records each time, so a partial run
leaves a usable table.

The script is longer than the library's ~500-line guide because it is one self-contained
benchmark (data, methods, report) that must run as a script from ``benchmarks/``.
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
from l1sparse.baselines_ao import torch_ao_pruning
from l1sparse.compact import unit_report
from l1sparse.models import MLP, mlp, resnet_small, vit_small
from l1sparse.tensors import select_tensors
from l1sparse.select import fit_sparse, resolve_steps
from l1sparse.sparsity import sparsity
from l1sparse.penalty import layer_names
from l1sparse.train import batches_per_epoch, make_optimizer, train_steps

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("default", "l1", "retrain", "gmp", "torch-ao", "prune-ft")
TOL = 0.005  # the tolerance of fit_sparse's zero-fraction targets (0.5 pp), used for baselines
BATCH = 128

# name: (loader, task, hidden, per-layer target)
SMALL = {
    "digits": ("load_digits", "classification", [64, 32], [0.95, 0.8, 0.5]),
    "wine": ("load_wine", "classification", [32], [0.95, 0.5]),
    "breast_cancer": ("load_breast_cancer", "classification", [64, 32], [0.95, 0.8, 0.5]),
    "diabetes": ("load_diabetes", "regression", [32, 16], [0.95, 0.8, 0.5]),
}
ARCHS = ("fashion-resnet", "fashion-vit")
ALL_SETS = ("fashion-mnist",) + ARCHS + ("mnist-5k",) + tuple(SMALL)
# the architectures' model, training subset (None: all 60,000) and epochs per size
SIZES = {
    "gpu": {"fashion-resnet": dict(model=dict(width=20), n_train=None, epochs=15),
            "fashion-vit": dict(model=dict(dim=64, depth=5, heads=4, mlp_dim=256),
                                n_train=None, epochs=30)},
    "cpu": {"fashion-resnet": dict(model=dict(width=8), n_train=6000, epochs=5),
            "fashion-vit": dict(model=dict(dim=32, depth=2, heads=4, mlp_dim=64),
                                n_train=6000, epochs=10)},
    "quick": {"fashion-resnet": dict(model=dict(width=4), n_train=5000, epochs=6),
              "fashion-vit": dict(model=dict(dim=32, depth=2, heads=4, mlp_dim=64),
                                  n_train=5000, epochs=8)},
}
OPTIMIZER = {"fashion-vit": ("adam", 1e-3)}  # (optimizer, lr) of every method; else SGD 0.1


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

    source = "fashion-mnist" if name in ARCHS else name
    if source not in _CACHE:
        _CACHE[source] = load_dataset(source, task="classification")
    ds = _CACHE[source]
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test, "classification", [300, 100], 10, None


def subset(X, y, n_train):
    """The first ``n_train`` images of a fixed permutation (seed 1234; the same for every run
    seed), or all of them."""
    if n_train is None or n_train >= X.shape[0]:
        return X, y
    keep = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(1234))[:n_train]
    return X[keep], y[keep]


# --------------------------------------------------------------------------- one record


class Clock:
    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


@torch.no_grad()
def evaluate(model, X, y, task, batch: int = 1000) -> float:
    """Test accuracy (or MSE per sample) in ``eval()`` mode, without gradients."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    try:
        for i in range(0, X.shape[0], batch):
            out = model(X[i:i + batch].to(device))
            yb = y[i:i + batch].to(device)
            total += float((out - yb.view_as(out)).pow(2).sum() if task == "regression"
                           else (out.argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    return total / X.shape[0]


@torch.no_grad()
def live_structure(model) -> tuple[list[float], list[int], str]:
    """(live, total, unit): live hidden units per hidden layer of an MLP; live output channels
    of all convolutions together (a channel is live when its kernel has a nonzero) of a CNN;
    live attention heads of a Transformer (a head is live when its value rows of
    ``in_proj_weight`` and its columns of ``out_proj`` both have a nonzero: otherwise its output
    does not depend on the input)."""
    if isinstance(model, MLP):
        units = unit_report(model)
        return [u.live for u in units], [u.width for u in units], "units"
    attn = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if attn:
        live = total = 0
        for m in attn:
            d, h = m.embed_dim, m.num_heads
            v = m.in_proj_weight[2 * d:].reshape(h, d // h, -1).abs().amax(dim=(1, 2))
            o = m.out_proj.weight.reshape(d, h, d // h).abs().amax(dim=(0, 2))
            live += int(((v > 0) & (o > 0)).sum())
            total += h
        return [live], [total], "heads"
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    live = sum(int((m.weight.flatten(1).abs().amax(dim=1) > 0).sum()) for m in convs)
    return [live], [sum(m.out_channels for m in convs)], "channels"


def describe(model, X, y, task) -> dict:
    s = sparsity(model)
    live, total, unit = live_structure(model)
    return {"metric": evaluate(model, X, y, task), "zeros": s.zero_fraction,
            "layer_zeros": [layer.zero_fraction for layer in s.layers],
            "live": live, "live_total": total, "live_unit": unit}


def dense_training(model, X, y, task, steps, seed, optimizer="sgd", lr=0.1,
                   device=None) -> None:
    if device is not None:
        model.to(device)
        X, y = X.to(device), y.to(device)
    opt = make_optimizer(model, optimizer, lr=lr, lambdas={k: 0.0 for k in layer_names(model)},
                         n_samples=X.shape[0], momentum=0.9)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    train_steps(model, (X, y), opt, task=task, steps=steps, batch_size=BATCH,
                generator=torch.Generator().manual_seed(seed), after_step=cos.step)


def run_cell(name: str, seed: int, methods: list[str], targets: list, epochs_override,
             log, size: str = "cpu", device=None) -> list[dict]:
    """All methods at every target for one data set and seed; the dense floor first."""
    X, y, Xt, yt, task, hidden, out, per_layer_target = dataset(name, seed)
    arch = SIZES[size][name] if name in ARCHS else None
    if arch is not None:
        X, y = subset(X, y, arch["n_train"])
    n = X.shape[0]
    bpe = batches_per_epoch(n, BATCH)
    if name == "fashion-mnist" or arch is not None:
        E = epochs_override or (arch["epochs"] if arch is not None else 10)
        steps = E * bpe
    else:
        steps = resolve_steps(bpe) if epochs_override is None else epochs_override * bpe
        E = max(1, round(steps / bpe))
    F = max(1, round(E / 5))
    opt_name, lr = OPTIMIZER.get(name, ("sgd", 0.1))

    def factory():
        if name == "fashion-resnet":
            return resnet_small(out, seed=seed, **arch["model"])
        if name == "fashion-vit":
            return vit_small(out, seed=seed, **arch["model"])
        return mlp(X.shape[1], hidden, out, seed=seed)

    common = dict(task=task, seed=seed, batch_size=BATCH, device=device)
    records = []
    n_weights = sum(t.numel() for t in select_tensors(factory(), warn=False))
    config = dict(arch["model"]) if arch is not None else {"hidden": hidden}

    def rec(method, target_label, target, model, wall, cpu, **extra):
        r = {"set": name, "seed": seed, "method": method, "target": target_label,
             "target_value": target, "wall": wall, "cpu": cpu, "n_train": n,
             "steps": steps, "epochs": E, "task": task, "size": size if arch else None,
             "model": config, "weights": n_weights, "optimizer": opt_name, "lr": lr,
             **describe(model, Xt, yt, task), **extra}
        records.append(r)
        log(f"{name} seed {seed} {method:>8} {target_label:>14}: zeros {r['zeros']:.4f} "
            f"metric {r['metric']:.4f} live {r['live']}/{r['live_total']} {wall:.1f}s wall "
            f"{cpu:.1f}s cpu " + " ".join(f"{k}={v}" for k, v in extra.items()
                                          if k in ("met", "warnings_n", "outer")))

    # the dense floor: fit_sparse's own loop (train_steps, the same proximal optimizer at
    # l1 = 0 and a cosine decay) for the same number of steps, without the SparsityScheduler
    dense = factory()
    clock = Clock()
    dense_training(dense, X, y, task, steps, seed, opt_name, lr, device)
    rec("dense", "—", None, dense, *clock.read(), met=None)

    n_layers = len(hidden) + 1
    for t in targets:
        if t == "layer":
            if per_layer_target is None or arch is not None:
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
                kw = dict(tkw, optimizer=opt_name, lr=lr, **common)
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
            elif method in ("gmp", "torch-ao"):
                clock = Clock()
                prune = gradual_magnitude_pruning if method == "gmp" else torch_ao_pruning
                res = prune(factory(), X, y, zero_fraction=glob_equiv, epochs=E,
                            optimizer=opt_name, lr=lr, **common)
                wall, cpu = clock.read()
                rec(method, label, glob_equiv, res.model, wall, cpu,
                    met=abs(res.zero_fraction - glob_equiv) <= TOL + 1e-12,
                    epochs_total=res.epochs_total)
            elif method == "prune-ft":
                clock = Clock()
                res = prune_and_finetune(factory(), X, y, zero_fraction=glob_equiv,
                                         epochs=max(1, E - F), finetune_epochs=F,
                                         optimizer=opt_name, lr=lr,
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
            "live_total": rs[0].get("live_total"), "live_unit": rs[0].get("live_unit", "units"),
            "size": rs[0].get("size"), "model": rs[0].get("model"),
            "weights": rs[0].get("weights"), "optimizer": rs[0].get("optimizer", "sgd"),
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
        arch = ""
        if a0.get("size"):
            arch = (f" Model {a0['model']} ({a0['weights']:,} penalised weights), size "
                    f"`{a0['size']}`; optimizer {a0['optimizer']} for every method.")
        parts.append(f"### {s}\n\n{a0['n_train']} training samples; {a0['epochs']} epochs "
                     f"= {a0['steps']} steps of fit_sparse (batch {BATCH}); up to {seeds} "
                     f"seeds; mean ± std over seeds.{arch}\n")
        unit = {"units": "live units per hidden layer", "channels": "live conv channels",
                "heads": "live attention heads"}[a0["live_unit"]]
        parts.append(f"| target zeros | method | seeds | {mname} | attained zeros | zeros per "
                     f"layer | met (seeds) | warnings (seeds) | {unit} | "
                     "cost × dense (CPU) | × dense (wall) | outer its |")
        parts.append("|---|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|")
        for k in keys:
            a = agg[k]
            met = "—" if a["met"] is None else f"{a['met'][0]}/{a['met'][1]}"
            warn = ("—" if k[2] in ("dense", "gmp", "torch-ao", "prune-ft")
                    else f"{a['warn']}/{a['n']}")
            tot = a["live_total"] or [None] * len(a["live"])
            live = " / ".join(f"{u:.1f}" + (f" of {t}" if t and a["live_unit"] != "units"
                                             else "") for u, t in zip(a["live"], tot))
            outer = f"{statistics.fmean(a['outer']):.1f}" if a["outer"] else "—"
            parts.append(
                f"| {k[1]} | {k[2]} | {a['n']} | {spread(a['metric'], '.4f')} | "
                f"{spread([100 * z for z in a['zeros']], '.2f')} % | "
                f"{' / '.join(f'{100 * z:.1f}' for z in a['layer_zeros'])} | {met} | {warn} | "
                f"{live} | {a['cost_cpu']:.2f} | "
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


def paired(records: list[dict], sets: list[str]) -> str:
    """Issue 25's "at least equal": the default's metric minus each baseline's, paired by seed
    (same initial weights and batch order); met when the mean difference is at least −1
    standard error of it (with one seed there is no standard error: no verdict)."""
    by = {}
    for r in records:
        by[(r["set"], r["target"], r["method"], r["seed"])] = r["metric"]
    lines = ["| data set | target zeros | default − | per-seed differences (points) | mean | "
             "standard error | verdict |", "|---|---|---|---|---:|---:|---|"]
    for s in sets:
        targets = sorted({k[1] for k in by if k[0] == s and k[2] == "default"}, key=target_order)
        for t in targets:
            for base in ("gmp", "torch-ao"):
                seeds = sorted(k[3] for k in by if k[:3] == (s, t, base)
                               and (s, t, "default", k[3]) in by)
                if not seeds:
                    continue
                sign = -1 if any(r["task"] == "regression" for r in records
                                 if r["set"] == s) else 1
                d = [100 * sign * (by[(s, t, "default", k)] - by[(s, t, base, k)]) for k in seeds]
                mean = statistics.fmean(d)
                if len(d) > 1:
                    se = statistics.stdev(d) / math.sqrt(len(d))
                    verdict = "at least equal" if mean >= -se else "**behind**"
                    se_s = f"{se:.2f}"
                else:
                    se_s, verdict = "—", "no verdict (1 seed)"
                lines.append(f"| {s} | {t} | {base} | "
                             + ", ".join(f"{v:+.2f}" for v in d)
                             + f" | {mean:+.2f} | {se_s} | {verdict} |")
    return "\n".join(lines)


def write_markdown(path: str, records: list[dict], meta: dict) -> None:
    sets = [s for s in ALL_SETS if any(r["set"] == s for r in records)]
    agg = aggregate(records)
    mlines = "\n".join(f"- {k}: {v}" for k, v in meta["machine"].items())
    status = meta["status"]
    text = f"""# The side-by-side benchmark suite (issue 12, item 6; architectures and torch.ao, issue 25)

Generated by `{meta['command']}` ({status}). Every number below comes from the records of
that run (`{os.path.relpath(meta['records'], HERE)}/`), rebuilt with `--render`.

**Methods**, in one process per data set, from the same initial weights (seed) and batch order:
`default` = `fit_sparse(...)` as shipped (warm mode, penalty "auto" = reweighted ℓ1 steered by
the SparsityScheduler); `l1` = the same with `penalty="l1"`; `retrain` = `fit_sparse(mode=
"retrain")` (the paper's scheme, plain ℓ1, a full training per outer iteration); `gmp` = gradual
magnitude pruning (cubic schedule to the target over the first 70 % of the run, a global prune
every 100 steps); `torch-ao` = `torch.ao.pruning`'s `WeightNormSparsifier` (unstructured, 4-D
kernels ranked through an (out, −1) view) on its `CubicSL` schedule over the same window and
mask-update frequency as `gmp`, but **uniform per tensor** (every tensor at the target
fraction) where `gmp` is global; `prune-ft` = dense training for E − F epochs, global magnitude
pruning, then F = max(1, round(E/5)) epochs of fine-tuning with the mask kept (Adam, lr 1e-3), E epochs in
all; `dense` = one dense training of the same number of steps (λ = 0) in `fit_sparse`'s own
loop (`train_steps`, the same proximal optimizer at l1 = 0 and a cosine decay, no
SparsityScheduler), the floor. Optimizer everywhere: SGD, momentum 0.9, lr 0.1, cosine decay to
5 %, batch {BATCH}; on the ViT every method uses Adam (ProxAdam), lr 1e-3. Test metrics are
taken in `eval()` mode (BatchNorm's running statistics).

**Architectures** (issue 25): `fashion-mnist` is LeNet-300-100 (784-300-100-10);
`fashion-resnet` a residual CNN with BatchNorm (`l1sparse.models.resnet_small`: 3×3 stem, three
stages of two basic blocks, 1×1 shortcuts, global pooling, linear classifier) and `fashion-vit`
a small Vision Transformer (`l1sparse.models.vit_small`: 4×4 patches, pre-norm encoder layers,
mean pooling), trained on the Fashion-MNIST subset and for the epochs of the size given in
their section. *Live conv channels*: output channels, over all convolutions, whose kernel has
a nonzero; *live attention heads*: heads whose value rows and output-projection columns both
have a nonzero (otherwise the head's output does not depend on the input).

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
## The default against GMP and torch.ao.pruning, paired by seed (issue 25)

Test-metric differences in points (accuracy × 100; for a regression set, the baseline's MSE
minus the default's, × 100, so positive is better for the default).

{paired(records, sets)}

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
                        help="LeNet-300-100 (3 epochs), tiny ResNet and ViT; 90 %%, 1 seed; "
                             "default, l1, gmp, torch-ao, dense")
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
    parser.add_argument("--size", choices=tuple(SIZES), default="cpu",
                        help="model size, training subset and epochs of the architectures "
                             "(SIZES; --quick uses its own tiny size)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda when available, else cpu)")
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

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    machine["device"] = str(device) + (f" ({torch.cuda.get_device_name(device)})"
                                       if device.type == "cuda" else "")
    size = "quick" if args.quick else args.size
    machine["architecture size (--size)"] = size
    if args.quick:
        plan = [("fashion-mnist", 1, 3), ("fashion-resnet", 1, None), ("fashion-vit", 1, None)]
        targets_by_set = {s: [0.9] for s, _, _ in plan}
    else:
        sets = args.sets.split(",") if args.sets else list(ALL_SETS)
        unknown = sorted(set(sets) - set(ALL_SETS))
        if unknown:
            parser.error(f"unknown data sets {unknown}; choose from {list(ALL_SETS)}")
        plan = [(s, args.seeds or (5 if s in SMALL else 3), args.epochs) for s in sets]
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
        elif args.quick:
            methods = ["default", "l1", "gmp", "torch-ao"]
        else:
            methods = [m for m in METHODS  # the architectures: issue 25's methods
                       if not (m == "retrain" and s == "fashion-mnist")
                       and not (s in ARCHS and m in ("retrain", "prune-ft"))]
        targets = targets_by_set.get(s, default_targets)
        records = []
        suffix = (f".from{args.first_seed}" if args.first_seed else "") + (
            f".{args.tag}" if args.tag else "")
        path = os.path.join(rec_dir, f"{s}{suffix}.json")
        for seed in range(args.first_seed, args.first_seed + n_seeds):
            records += run_cell(s, seed, methods, targets, ep, log, size=size, device=device)
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
