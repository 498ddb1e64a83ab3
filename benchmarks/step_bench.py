"""Micro-benchmark: one optimizer step of ProxSGD / ProxAdam against torch.optim.SGD / Adam.

The parameters are those of LeNet-300-100 (784-300-100-10, 266,610 parameters) with fixed
random gradients. Every optimizer runs ``--block`` steps per measurement; the measurements of
all optimizers are interleaved over ``--rounds`` rounds (so that load from other jobs hits them
alike) and the median time per step is reported, with its ratio to the matching
``torch.optim`` step (``foreach=True``).

Rows:

- ``torch.optim.SGD`` / ``Adam`` with ``foreach=True``, one parameter group (how a plain
  PyTorch user writes it), and with the four groups l1sparse uses (one per weight matrix, one
  for the biases), and ``Adam(fused=True)``;
- ``ProxSGD`` / ``ProxAdam`` with ``l1 = 0`` (the plain step through our kernels) and with
  ``l1 > 0`` on the weights (the proximal step, soft-thresholding included), and with
  ``compile=True`` (the whole step in one compiled pass);
- ``torch.optim.SGD(fused=True)``, the fastest plain step torch offers on CPU;
- the same for SGD with momentum 0.9 (``fit_sparse``'s default optimizer);
- for scale: one whole training step (forward, backward, proximal step) at batch 128.

Usage::

    python benchmarks/step_bench.py --threads 1 --write
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch

from l1sparse.models import mlp
from l1sparse.penalty import param_groups
from l1sparse.prox import ProxAdam, ProxSGD

from _machine import machine_description  # noqa: E402 - run as a script from benchmarks/

HERE = os.path.dirname(os.path.abspath(__file__))


def _net_with_grads(seed: int, hidden: tuple[int, ...] = (300, 100)):
    net = mlp(784, list(hidden), 10, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return net


def build(seed: int) -> dict[str, tuple[torch.optim.Optimizer, str]]:
    """name → (optimizer on its own copy of the network, name of its torch reference)."""
    out = {}
    l1 = {"fc1": 1e-4, "fc2": 1e-4, "fc3": 1e-4}
    zero = dict.fromkeys(l1, 0.0)
    n = _net_with_grads(seed)
    out["torch SGD foreach (1 group)"] = (torch.optim.SGD(n.parameters(), lr=1e-2, foreach=True), None)
    n = _net_with_grads(seed)
    out["torch SGD foreach (4 groups)"] = (torch.optim.SGD(param_groups(n, zero), lr=1e-2,
                                                           foreach=True), None)
    n = _net_with_grads(seed)
    out["ProxSGD l1=0"] = (ProxSGD(param_groups(n, zero), lr=1e-2), "torch SGD foreach (4 groups)")
    n = _net_with_grads(seed)
    out["ProxSGD l1>0"] = (ProxSGD(param_groups(n, l1), lr=1e-2), "torch SGD foreach (4 groups)")
    n = _net_with_grads(seed)
    out["ProxSGD l1>0 compiled"] = (ProxSGD(param_groups(n, l1), lr=1e-2, compile=True),
                                    "torch SGD foreach (4 groups)")
    n = _net_with_grads(seed)
    out["torch SGD fused (1 group)"] = (torch.optim.SGD(n.parameters(), lr=1e-2, fused=True), None)
    n = _net_with_grads(seed)
    out["torch SGD momentum 0.9 foreach (1 group)"] = (
        torch.optim.SGD(n.parameters(), lr=1e-1, momentum=0.9, foreach=True), None)
    n = _net_with_grads(seed)
    out["torch SGD momentum 0.9 foreach (4 groups)"] = (
        torch.optim.SGD(param_groups(n, zero), lr=1e-1, momentum=0.9, foreach=True), None)
    n = _net_with_grads(seed)
    out["ProxSGD momentum 0.9 l1=0"] = (ProxSGD(param_groups(n, zero), lr=1e-1, momentum=0.9),
                                        "torch SGD momentum 0.9 foreach (4 groups)")
    n = _net_with_grads(seed)
    out["ProxSGD momentum 0.9 l1>0"] = (ProxSGD(param_groups(n, l1), lr=1e-1, momentum=0.9),
                                        "torch SGD momentum 0.9 foreach (4 groups)")
    n = _net_with_grads(seed)
    out["ProxSGD momentum 0.9 l1>0 compiled"] = (
        ProxSGD(param_groups(n, l1), lr=1e-1, momentum=0.9, compile=True),
        "torch SGD momentum 0.9 foreach (4 groups)")
    n = _net_with_grads(seed)
    out["torch SGD momentum 0.9 fused (1 group)"] = (
        torch.optim.SGD(n.parameters(), lr=1e-1, momentum=0.9, fused=True), None)
    n = _net_with_grads(seed)
    out["torch Adam foreach (1 group)"] = (torch.optim.Adam(n.parameters(), lr=1e-3,
                                                            foreach=True), None)
    n = _net_with_grads(seed)
    out["torch Adam foreach (4 groups)"] = (torch.optim.Adam(param_groups(n, zero), lr=1e-3,
                                                             foreach=True), None)
    n = _net_with_grads(seed)
    try:
        out["torch Adam fused (1 group)"] = (torch.optim.Adam(n.parameters(), lr=1e-3,
                                                              fused=True), None)
    except (RuntimeError, ValueError):  # fused Adam not built for this device
        pass
    n = _net_with_grads(seed)
    out["ProxAdam l1=0"] = (ProxAdam(param_groups(n, zero), lr=1e-3), "torch Adam foreach (4 groups)")
    n = _net_with_grads(seed)
    out["ProxAdam l1>0"] = (ProxAdam(param_groups(n, l1), lr=1e-3), "torch Adam foreach (4 groups)")
    n = _net_with_grads(seed)
    out["ProxAdam l1>0 compiled"] = (ProxAdam(param_groups(n, l1), lr=1e-3, compile=True),
                                          "torch Adam foreach (4 groups)")
    return out


def _kind(name: str) -> str:
    return "SGDm" if "momentum" in name else "SGD" if "SGD" in name else "Adam"


def training_step(seed: int, optimizer: str, batch: int = 128):
    """One forward + backward + proximal step (l1 > 0) at the given batch size, for scale."""
    net = mlp(784, [300, 100], 10, seed=seed)
    groups = param_groups(net, {"fc1": 1e-4, "fc2": 1e-4, "fc3": 1e-4})
    opt = (ProxAdam(groups, lr=1e-3) if optimizer == "adam"
           else ProxSGD(groups, lr=1e-1, momentum=0.9))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 784, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return step


SCALING_WIDTHS = ((300, 100), (1024, 1024), (2048, 2048, 2048))


def scaling(seed: int, rounds: int, threads: int) -> str:
    """SGD with momentum against ProxSGD (eager and compiled) as the network grows: the
    compiled step costs a fixed call overhead plus one pass over the tensors."""
    lines = ["| hidden widths | parameters | torch SGD momentum fused (1 group) µs | "
             "ProxSGD l1>0 µs | ProxSGD l1>0 compiled µs | ProxSGD / fused | "
             "compiled / fused |", "|---|---:|---:|---:|---:|---:|---:|"]
    for hidden in SCALING_WIDTHS:
        names = {"fused": None, "eager": False, "compiled": True}
        opts = {}
        for name, compiled in names.items():
            n = _net_with_grads(seed, hidden)
            if compiled is None:
                opts[name] = torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9, fused=True)
            else:
                l1 = {k: 1e-4 for k in ("fc1", "fc2", "fc3", "fc4")[:len(hidden) + 1]}
                opts[name] = ProxSGD(param_groups(n, l1), lr=0.1, momentum=0.9, compile=compiled)
        params = sum(p.numel() for p in n.parameters())
        block = max(2, int(2e7 // params))
        samples = {k: [] for k in opts}
        for o in opts.values():
            for _ in range(5):
                o.step()
        for _ in range(rounds):
            for name, o in opts.items():
                t0 = time.perf_counter()
                for _ in range(block):
                    o.step()
                samples[name].append((time.perf_counter() - t0) / block * 1e6)
        med = {k: statistics.median(v) for k, v in samples.items()}
        lines.append(f"| {'-'.join(map(str, hidden))} | {params:,} | {med['fused']:.0f} | "
                     f"{med['eager']:.0f} | {med['compiled']:.0f} | "
                     f"{med['eager'] / med['fused']:.2f}× | {med['compiled'] / med['fused']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds (31)")
    parser.add_argument("--block", type=int, default=50, help="steps per measurement (50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write --out")
    parser.add_argument("--out", default=os.path.join(HERE, "STEP_RESULTS.md"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.block < 1:
        parser.error("--threads, --rounds and --block must be positive integers.")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    opts = build(args.seed)
    fns = {name: opt.step for name, (opt, _) in opts.items()}
    fns["training step (fwd+bwd+ProxAdam, batch 128)"] = training_step(args.seed, "adam")
    fns["training step (fwd+bwd+ProxSGD momentum, batch 128)"] = training_step(args.seed, "sgd")
    for fn in fns.values():  # warm-up: lazy imports, state allocation, caches
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, int] = dict.fromkeys(fns, 0)  # minor page faults, summed over rounds
    for _ in range(args.rounds):
        for name, fn in fns.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for _ in range(args.block):
                fn()
            samples[name].append((time.perf_counter() - t0) / args.block * 1e6)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    per_step = {k: v / (args.rounds * args.block) for k, v in faults.items()}
    med = {k: statistics.median(v) for k, v in samples.items()}
    spread = {k: (statistics.quantiles(v, n=4)[0], statistics.quantiles(v, n=4)[2])
              if len(v) >= 2 else (v[0], v[0]) for k, v in samples.items()}
    ref_1 = {"SGD": med["torch SGD foreach (1 group)"], "Adam": med["torch Adam foreach (1 group)"],
             "SGDm": med["torch SGD momentum 0.9 foreach (1 group)"]}
    # the fastest plain torch step of each kind, one group: what a PyTorch user can get
    best = {kind: min(med[n] for n, (_, ref) in opts.items() if ref is None and "1 group" in n
                      and _kind(n) == kind) for kind in ref_1}

    lines = ["| step | median µs | IQR µs | vs torch foreach, same groups | "
             "vs torch foreach, 1 group | vs fastest torch, 1 group | page faults / step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, (_, ref) in opts.items():
        kind = _kind(name)
        same = f"{med[name] / med[ref]:.2f}×" if ref else ""
        lines.append(f"| {name} | {med[name]:.1f} | {spread[name][0]:.1f}–{spread[name][1]:.1f} "
                     f"| {same} | {med[name] / ref_1[kind]:.2f}× | {med[name] / best[kind]:.2f}× "
                     f"| {per_step[name]:.0f} |")
    for ts in ("training step (fwd+bwd+ProxAdam, batch 128)",
               "training step (fwd+bwd+ProxSGD momentum, batch 128)"):
        lines.append(f"| {ts} | {med[ts]:.1f} | {spread[ts][0]:.1f}–{spread[ts][1]:.1f} | | | | "
                     f"{per_step[ts]:.0f} |")
    ts = "training step (fwd+bwd+ProxAdam, batch 128)"
    share = med["ProxAdam l1>0"] / med[ts]
    extra = (med["ProxAdam l1>0"] - med["torch Adam foreach (1 group)"]) / med[ts]
    ts_s = "training step (fwd+bwd+ProxSGD momentum, batch 128)"
    share_s = med["ProxSGD momentum 0.9 l1>0"] / med[ts_s]
    extra_s = (med["ProxSGD momentum 0.9 l1>0"]
               - med["torch SGD momentum 0.9 foreach (1 group)"]) / med[ts_s]
    table = "\n".join(lines)
    print(table)
    scale_table = scaling(args.seed, max(5, args.rounds // 3), args.threads)
    print("\n" + scale_table)
    summary = (f"ProxAdam (l1>0) step = {share:.1%} of a ProxAdam training step at batch 128; "
               f"its extra cost over `torch.optim.Adam(foreach=True)` with one group = "
               f"{extra:.1%} of that training step. ProxSGD (momentum 0.9, l1>0) step = "
               f"{share_s:.1%} of a ProxSGD training step; extra over `torch.optim.SGD("
               f"momentum=0.9, foreach=True)` = {extra_s:.1%}.")
    print("\n" + summary)

    if args.write:
        machine = machine_description(args.threads)
        if hasattr(os, "getloadavg"):
            machine["load average (1 min) at start / end"] = f"{load0:.2f} / {os.getloadavg()[0]:.2f}"
        mlines = "\n".join(f"- {k}: {v}" for k, v in machine.items())
        text = f"""# Optimizer step micro-benchmark: LeNet-300-100 parameters

Generated by `python benchmarks/step_bench.py --threads {args.threads} --rounds {args.rounds} \\
--block {args.block} --write`.

266,610 parameters (784-300-100-10) with fixed random gradients. Each entry is the median over
{args.rounds} interleaved rounds of the mean time per step over a block of {args.block} steps
(IQR over the rounds). *Fastest torch, 1 group*: the quicker of torch's foreach and fused
kernels for that optimizer, one parameter group, no ℓ1: the plain step a PyTorch user gets at
best. *compiled*: `compile=True`, the whole step fused into one pass with `torch.compile`. "4 groups" is the layout l1sparse uses (`param_groups`: one group per
weight matrix, one for the biases). `l1>0` sets l1 = 1e-4 on every weight matrix, so the
soft-thresholding runs; `l1=0` takes the plain step through our kernels. The last row, a whole
training steps at batch 128 (l1 > 0), give the scale. *Page faults / step*: minor page faults of the
process (`getrusage`) per step: fresh memory that the kernel had to map, i.e. temporaries that
glibc's allocator handed back to the system and took again.

## Machine

{mlines}

## Step time

{table}

{summary}

## As the network grows

SGD with momentum 0.9, l1 = 1e-4 on every weight matrix; median of {max(5, args.rounds // 3)}
interleaved rounds. The compiled step pays a fixed call overhead (argument checks of the
compiled function) and then one pass over the tensors, as the fused kernel does.

{scale_table}
"""
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
