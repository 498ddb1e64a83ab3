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

**The cost of a sparse training** (issue 25, :func:`run_costs`): whole runs of the same
batches, one thread, on the 64-32 MLP (digits), LeNet-300-100 (Fashion-MNIST) and the small
ResNet and ViT of ``compare.py --size cpu``, timed in interleaved rounds:

- ``torch SGD``: a bare loop (forward, mean cross-entropy, backward,
  ``torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)`` at its defaults, one group), the
  denominator of every ratio;
- ``ProxSGD + scheduler``: the same loop with ``ProxSGD(param_groups(model))`` and a
  ``SparsityScheduler`` (zero fraction 0.9, reweighted ℓ1) riding on its step hook;
- ``SGD + scheduler``: the same loop with torch's SGD and ``SparsityScheduler(model=...)``
  (the proximal step on the step hook);
- ``fit_sparse``: ``fit_sparse(model, X, y, steps=T, zero_fraction=0.9)``, the library's own
  loop (``train_steps``, cosine decay, the scheduler, the network checks at the end);
- on the ViT also ``torch Adam`` and ``ProxAdam + scheduler``.

The ratio reported is the median over rounds of (loop time / bare loop time of the same
round), in CPU time (``time.process_time``; the machine is shared) and in wall time.

Usage::

    python benchmarks/step_bench.py --threads 1 --write
    python benchmarks/step_bench.py --cost-only --cost-rounds 5   # only the run costs
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch

from l1sparse.models import mlp, resnet_small, vit_small
from l1sparse.penalty import param_groups
from l1sparse.prox import ProxAdam, ProxSGD
from l1sparse.scheduler import SparsityScheduler
from l1sparse.select import fit_sparse

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

# --------------------------------------------------------------------------- run costs


def _cost_setups(which: list[str]):
    """name -> (model factory, X, y, steps timed, scheduler run length, description)."""
    out = {}
    if "mlp64" in which:
        import sklearn.datasets

        Xd, yd = sklearn.datasets.load_digits(return_X_y=True)
        X = torch.tensor((Xd - Xd.mean(0)) / (Xd.std(0) + 1e-8), dtype=torch.float32)[:1347]
        y = torch.tensor(yd, dtype=torch.int64)[:1347]
        out["mlp64"] = (lambda: mlp(64, [64, 32], 10, seed=0), X, y, 3000, 3000,
                        "64-32 MLP, digits (1,347 samples), 3,000 steps (fit_sparse's default "
                        "budget there)")
    if any(k in which for k in ("lenet", "resnet", "vit")):
        from l1sparse.data import load_dataset

        ds = load_dataset("fashion-mnist", task="classification")
        keep = torch.randperm(ds.X_train.shape[0], generator=torch.Generator().manual_seed(1234))
        if "lenet" in which:
            out["lenet"] = (lambda: mlp(784, [300, 100], 10, seed=0), ds.X_train, ds.y_train,
                            4690, 4690, "LeNet-300-100, Fashion-MNIST (60,000), 4,690 steps (the "
                            "10 epochs of compare.py)")
        sub = keep[:6000]
        if "resnet" in which:
            out["resnet"] = (lambda: resnet_small(width=8, seed=0), ds.X_train[sub],
                             ds.y_train[sub], 235, 235, "ResNet (width 8, 43,656 weights), "
                             "6,000 Fashion-MNIST images, 235 steps (the 5 epochs of "
                             "compare.py --size cpu)")
        if "vit" in which:
            out["vit"] = (lambda: vit_small(dim=32, depth=2, heads=4, mlp_dim=64, seed=0),
                          ds.X_train[sub], ds.y_train[sub], 470, 470, "ViT (dim 32, depth 2, "
                          "17,216 weights), 6,000 Fashion-MNIST images, 470 steps (the 10 "
                          "epochs of compare.py --size cpu)")
    return out


def _batches(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """The index batches of ``steps`` steps at batch 128: a fresh permutation per epoch."""
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        order = torch.randperm(n, generator=g)
        out += list(order.split(128))
    return out[:steps]


def _loop(kind: str, factory, X, y, steps: int, run_len: int) -> None:
    """One timed run of ``steps`` steps of the given kind (see the module docstring)."""
    net = factory()
    if kind == "fit_sparse":
        check = max(1, min(10, run_len // 300))
        fit_sparse(net, X, y, task="classification", zero_fraction=0.9, steps=steps, seed=0,
                   validation_fraction=0, check_every=check)
        return
    if kind == "torch SGD":
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    elif kind == "torch Adam":
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    elif kind == "ProxSGD + scheduler":
        opt = ProxSGD(param_groups(net), lr=0.1, momentum=0.9)
    elif kind == "ProxAdam + scheduler":
        opt = ProxAdam(param_groups(net), lr=1e-3)
    elif kind == "SGD + scheduler":
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    else:
        raise ValueError(kind)
    if "scheduler" in kind:
        SparsityScheduler(opt, model=None if kind.startswith("Prox") else net,
                          zero_fraction=0.9, total_steps=run_len, n_samples=X.shape[0])
    for idx in _batches(X.shape[0], steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()


def run_costs(which: list[str], rounds: int, log=print) -> tuple[str, dict]:
    """The cost table: per setup and loop, the median over rounds of the time ratio to the
    bare ``torch SGD`` loop of the same round (CPU and wall)."""
    import warnings

    setups = _cost_setups(which)
    lines = ["| model | loop | median CPU s | × torch SGD (CPU) | × torch SGD (wall) | "
             "IQR of the CPU ratio |", "|---|---|---:|---:|---:|---|"]
    results, notes = {}, []
    for name, (factory, X, y, steps, run_len, desc) in setups.items():
        kinds = ["torch SGD", "ProxSGD + scheduler", "SGD + scheduler", "fit_sparse"]
        if name == "vit":
            kinds += ["torch Adam", "ProxAdam + scheduler"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ViT's pos_embedding notice
            _loop("ProxSGD + scheduler", factory, X, y, min(steps, 5), run_len)  # warm-up
            cpu: dict[str, list[float]] = {k: [] for k in kinds}
            wall: dict[str, list[float]] = {k: [] for k in kinds}
            for r in range(rounds):
                for k in kinds:
                    w0, c0 = time.perf_counter(), time.process_time()
                    _loop(k, factory, X, y, steps, run_len)
                    cpu[k].append(time.process_time() - c0)
                    wall[k].append(time.perf_counter() - w0)
                log(f"{name} round {r + 1}/{rounds}: " + ", ".join(
                    f"{k} {cpu[k][-1]:.2f}s" for k in kinds))
        base = "torch SGD"
        for k in kinds:
            ref = "torch Adam" if "Adam" in k else base
            rc = [a / b for a, b in zip(cpu[k], cpu[ref])]
            rw = [a / b for a, b in zip(wall[k], wall[ref])]
            q = statistics.quantiles(rc, n=4) if len(rc) >= 2 else [rc[0]] * 3
            results[(name, k)] = (statistics.median(rc), statistics.median(rw))
            label = k if ref == base else f"{k} (over torch Adam)"
            lines.append(f"| {name} | {label} | {statistics.median(cpu[k]):.2f} | "
                         f"{statistics.median(rc):.2f} | {statistics.median(rw):.2f} | "
                         f"{q[0]:.2f}–{q[2]:.2f} |")
        notes.append(f"- **{name}**: {desc}.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes), results



COST_HEADING = "## The cost of a sparse training (issue 25)"


def cost_section(table: str, args, load0: float) -> str:
    """The markdown section of the run costs, with the command and the machine."""
    machine = machine_description(args.threads)
    if hasattr(os, "getloadavg"):
        machine["load average (1 min) at start / end"] = (f"{load0:.2f} / "
                                                          f"{os.getloadavg()[0]:.2f}")
    mlines = "\n".join(f"- {k}: {v}" for k, v in machine.items())
    return f"""{COST_HEADING}

Generated by `python benchmarks/step_bench.py --cost-only --cost-rounds {args.cost_rounds} \
--cost-models {args.cost_models} --threads {args.threads} --write` (or the full run).

Whole runs on the same batches (batch 128, a fresh permutation per epoch), interleaved over
{args.cost_rounds} rounds; each ratio is the median over rounds of the loop's time over the bare
`torch.optim.SGD(lr=0.1, momentum=0.9)` loop of the same round (the ProxAdam row: over
`torch.optim.Adam`). The SparsityScheduler targets 90 % zeros with its defaults (reweighted
ℓ1, counting every `check_every` = max(1, min(10, run length // 300)) steps). `fit_sparse` runs
its whole procedure for the same steps (its loop, cosine decay, scheduler, and the network
checks at the end), with its own batch order from the same seed; its one-off costs (the data
checks, and after training the warning check on at most 8,192 training samples) do not grow
with the run. Each run is the length the model trains for in `compare.py` (below). The issue's
budget: ≤ 1.25×.

{table}

Machine:

{mlines}
"""

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds (31)")
    parser.add_argument("--block", type=int, default=50, help="steps per measurement (50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write --out")
    parser.add_argument("--out", default=os.path.join(HERE, "STEP_RESULTS.md"))
    parser.add_argument("--cost-only", action="store_true",
                        help="only the cost of whole runs (issue 25); --write then replaces "
                             "that section of --out and keeps the rest")
    parser.add_argument("--cost-rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--cost-models", default="mlp64,lenet,resnet,vit")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.block < 1:
        parser.error("--threads, --rounds and --block must be positive integers.")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    which = args.cost_models.split(",")
    if args.cost_only:
        table, _ = run_costs(which, args.cost_rounds)
        print(table)
        if args.write:
            section = cost_section(table, args, load0)
            old = open(args.out, encoding="utf-8").read() if os.path.exists(args.out) else ""
            head = old.split(COST_HEADING)[0].rstrip() if old else ""
            with open(args.out, "w", encoding="utf-8") as f:
                f.write((head + "\n\n" if head else "") + section)
            print(f"wrote {args.out}", file=sys.stderr)
        return 0

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
    cost_table, _ = run_costs(which, args.cost_rounds)
    print("\n" + cost_table)

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

{cost_section(cost_table, args, load0)}"""
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
