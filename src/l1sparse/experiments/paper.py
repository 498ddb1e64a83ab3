"""The paper's own experiments, side by side with ours (issue: the paper's own algorithm).

Four cases, as the authors' public code ran them (``PAPER.md``):

==============  ========================================================================
``mg``          Mackey–Glass regression (:func:`~l1sparse.data.load_mg`), ReLU MLP
                6-128-128-64-1 (:func:`~l1sparse.models.paper_mlp`), full batch, lr 0.1:
                2,000 nonzeros ± 0.1 %
``mg-layers``   the same, per layer [650, 1200, 1000, 45] ± 5 %, 3 of 4 layers
``cnn``         the CNN 1152-512-10 (:func:`~l1sparse.models.paper_cnn`) on 28×28 digits
                (pixels to [−1, 1]), batch 128, lr 0.1: 50,000 nonzeros ± 0.1 %
``cnn-layers``  the same, per layer [250, 8000, 13000, 20000, 4200] ± 10 %, all 5 layers
==============  ========================================================================

Three methods from the same initial weights: ``paper`` — the paper's rule
(:func:`~l1sparse.retrain.retrain_select`, ``rule="paper"``: plain proximal SGD, λ bracketed
and retrained, each training stopped on entering the tolerance); ``default`` —
:func:`~l1sparse.select.fit_sparse` with its defaults (the warm scheduler, reweighted ℓ1),
full batch on mg; ``gmp`` — gradual magnitude pruning at the default's nonzero count and
epochs. :func:`run_paper` writes ``records.json`` (every number, every outer iteration),
``paper.md`` (the tables, written from the records) and, with matplotlib, the figures.

Tiers: ``quick`` (under a minute on one idle CPU thread: short trainings, the CNN on 512 of
the mnist-5k digits; it checks the machinery, not the methods; tested) and ``full`` (the
paper's budgets on mg: up to 50,000 full-batch epochs per training; the CNN at a reduced budget
— 20 epochs per training on mnist-5k, not the paper's 200 on 60,000 images, which would take
hours per training here; the default and GMP at the default's own budget).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..baselines import gradual_magnitude_pruning
from ..config import DEFAULTS
from ..data import load_dataset
from ..losses import metric
from ..models import paper_cnn, paper_mlp
from ..retrain import retrain_select
from ..rule import layers_within
from ..select import fit_sparse
from ..sparsity import nnz_per_layer
from ..targets import make_target
from ..train import batches_per_epoch

__all__ = ["PaperCase", "PAPER_CASES", "TIERS", "ANCHORS", "paper_cases", "run_paper",
           "paper_tables"]

log = logging.getLogger(__name__)

METHODS = ("paper", "default", "gmp")


@dataclass(frozen=True)
class PaperCase:
    """One of the paper's experiments at one budget."""

    name: str
    data: str  # "mg", "mnist-5k", "fashion-mnist", "mnist"
    target: int | tuple[int, ...]  # nonzeros, total or per layer
    rel_tol: float
    layers_required: int | None  # per layer: how many must be within rel_tol (None: all)
    epochs_per_training: float  # the paper rule's budget per λ
    max_trainings: int
    batch_size: int | None  # None: full batch
    n_train: int | None = None  # a seeded subset of the training set (None: all)
    n_test: int | None = None
    default_epochs: float | None = None  # the default's budget (None: fit_sparse's own)

    @property
    def per_layer(self) -> bool:
        return isinstance(self.target, tuple)


PAPER_CASES = {
    "mg": PaperCase("mg", "mg", 2000, 0.001, None, 50_000, 99, None),
    "mg-layers": PaperCase("mg-layers", "mg", (650, 1200, 1000, 45), 0.05, 3, 50_000, 99,
                           None),
    "cnn": PaperCase("cnn", "mnist-5k", 50_000, 0.001, None, 20, 29, 128),
    "cnn-layers": PaperCase("cnn-layers", "mnist-5k", (250, 8000, 13000, 20000, 4200), 0.1,
                            None, 20, 29, 128),
}
"""The full tier: the paper's targets, tolerances and (on mg) budgets."""

_QUICK = {"mg": dict(epochs_per_training=300, max_trainings=4, default_epochs=300),
          "mg-layers": dict(epochs_per_training=300, max_trainings=4, default_epochs=300),
          "cnn": dict(epochs_per_training=2, max_trainings=3, n_train=512, n_test=500,
                      default_epochs=2),
          "cnn-layers": dict(epochs_per_training=2, max_trainings=3, n_train=512,
                             n_test=500, default_epochs=2)}

TIERS = ("quick", "full")

ANCHORS = {
    "mg": "the authors' own run (their code, one thread here): 5 trainings, 227,790 "
          "full-batch epochs, 24 min, 2,002 nonzeros, test MSE 0.0143 (train 0.0124), on their "
          "1,000/384 split",
    "mg-layers": "the authors' own run: 9 trainings, 443,709 full-batch epochs, nonzeros "
                 "[567, 1238, 1013, 45], test MSE 0.0141, on their 1,000/384 split",
}
"""The numbers quoted from the authors' runs (not run by this module)."""


def paper_cases(tier: str = "quick") -> dict[str, PaperCase]:
    """The four cases at ``tier``'s budgets."""
    if tier not in TIERS:
        raise ValueError(f"The 'tier' parameter must be one of {list(TIERS)}. Got {tier!r}.")
    if tier == "full":
        return dict(PAPER_CASES)
    return {k: replace(c, **_QUICK[k]) for k, c in PAPER_CASES.items()}


def _data(case: PaperCase, seed: int):
    data = load_dataset(case.data, seed=seed)
    Xtr, ytr, Xte, yte = data.X_train, data.y_train, data.X_test, data.y_test
    if data.task == "classification":  # the authors' normalisation: mean 0.5, std 0.5
        Xtr, Xte = (Xtr - 0.5) / 0.5, (Xte - 0.5) / 0.5
    g = torch.Generator().manual_seed(seed)
    if case.n_train is not None and case.n_train < Xtr.shape[0]:
        idx = torch.randperm(Xtr.shape[0], generator=g)[:case.n_train]
        Xtr, ytr = Xtr[idx], ytr[idx]
    if case.n_test is not None and case.n_test < Xte.shape[0]:
        idx = torch.randperm(Xte.shape[0], generator=g)[:case.n_test]
        Xte, yte = Xte[idx], yte[idx]
    return data.task, Xtr, ytr, Xte, yte


def _model(case: PaperCase, seed: int) -> nn.Module:
    return paper_mlp(seed=seed) if case.data == "mg" else paper_cnn(seed=seed)


def _met(case: PaperCase, nnz: dict[str, int]) -> bool:
    counts = list(nnz.values())
    if not case.per_layer:
        return abs(sum(counts) - case.target) <= case.rel_tol * case.target + 1e-9
    required = case.layers_required or len(counts)
    return sum(layers_within(counts, list(case.target), case.rel_tol)) >= required


def _row(case, method, model, task, data, *, trainings, epochs, seconds, lambdas=None,
         n=None, history=None, note="") -> dict:
    Xtr, ytr, Xte, yte = data
    model.eval()
    with torch.no_grad():
        train_m, test_m = metric(model, Xtr, ytr, task), metric(model, Xte, yte, task)
    nnz = nnz_per_layer(model)
    row = {"case": case.name, "method": method, "data": case.data, "n_train": Xtr.shape[0],
           "n_test": Xte.shape[0], "target": case.target, "rel_tol": case.rel_tol,
           "layers_required": case.layers_required, "nnz_total": sum(nnz.values()),
           "nnz": nnz, "met": _met(case, nnz), "trainings": trainings, "epochs": epochs,
           "metric_name": "mse" if task == "regression" else "accuracy",
           "train_metric": train_m, "test_metric": test_m, "seconds": seconds, "note": note}
    if lambdas is not None:
        row["lambda_sum"] = dict(lambdas)
        row["lambda_mean"] = {k: v / n for k, v in lambdas.items()}
    if history is not None:
        row["history"] = history
    return row


def _target_kwargs(case: PaperCase, model: nn.Module) -> dict:
    if case.per_layer:
        target = make_target(model, layer_nnz=list(case.target), tol=0)
        return {"target": replace(target, scopes=tuple(
            replace(s, tol=case.rel_tol * s.nnz) for s in target.scopes))}
    return {"nnz": case.target, "tol": case.rel_tol * case.target}


def run_case(case: PaperCase, *, methods=METHODS, seed: int = 0, lr: float = 0.1) -> list[dict]:
    """Run ``methods`` on one case from the same initial weights; one record per method."""
    task, Xtr, ytr, Xte, yte = _data(case, seed)
    data = (Xtr, ytr, Xte, yte)
    n = Xtr.shape[0]
    rows = []
    default_row = None
    for method in METHODS:
        if method not in methods:
            continue
        model = _model(case, seed)
        t0 = time.perf_counter()
        if method == "paper":
            res = retrain_select(
                model, Xtr, ytr, task=task, **_target_kwargs(case, model), rule="paper",
                layers_required=case.layers_required, epochs_per_training=case.epochs_per_training,
                batch_size=case.batch_size, lr=lr, optimizer="sgd", momentum=0.0, seed=seed,
                max_trainings=case.max_trainings, eval_data=(Xte, yte))
            rows.append(_row(case, method, model, task, data, trainings=res.trainings,
                             epochs=res.epochs_total, seconds=time.perf_counter() - t0,
                             lambdas=res.lambdas, n=n,
                             history=[r.as_row() for r in res.history]))
        elif method == "default":
            budget = {} if case.default_epochs is None else {"epochs": case.default_epochs}
            sel = fit_sparse(model, Xtr, ytr, task=task, **_target_kwargs(case, model),
                             batch_size=case.batch_size, seed=seed, **budget)
            default_row = _row(case, method, model, task, data, trainings=1,
                               epochs=sel.epochs_total, seconds=time.perf_counter() - t0,
                               lambdas=sel.lambdas, n=n)
            rows.append(default_row)
        else:  # GMP at the default's count and epochs (or the target and the case budget)
            total = sum(m.weight.numel() for m in model.modules()
                        if isinstance(m, (nn.Linear, nn.Conv2d)))
            nnz = default_row["nnz_total"] if default_row else (
                case.target if not case.per_layer else sum(case.target))
            epochs = default_row["epochs"] if default_row else (
                case.default_epochs or DEFAULTS.epochs)
            epochs = max(1, math.ceil(epochs - 1e-9))
            steps = epochs * batches_per_epoch(n, case.batch_size)
            res = gradual_magnitude_pruning(
                model, Xtr, ytr, task=task, zero_fraction=1 - nnz / total, epochs=epochs,
                frequency=max(1, steps // 50), lr=lr, batch_size=case.batch_size,
                momentum=DEFAULTS.momentum_for(batch_size=case.batch_size), seed=seed)
            rows.append(_row(case, method, model, task, data, trainings=1, epochs=epochs,
                             seconds=time.perf_counter() - t0,
                             note="global magnitude (no per-layer targets)"
                             if case.per_layer else ""))
        log.info("%s %s: nnz %d, test %s %.4g, %.1f s", case.name, method,
                 rows[-1]["nnz_total"], rows[-1]["metric_name"], rows[-1]["test_metric"],
                 rows[-1]["seconds"])
    return rows


def _fmt_lam(row: dict, key: str) -> str:
    lams = row.get(key)
    if not lams:
        return "–"
    values = list(lams.values())
    if len(set(values)) == 1:
        return f"{values[0]:.3g}"
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def paper_tables(records: list[dict], *, tier: str, machine: str = "") -> str:
    """The Markdown tables (one per case), written from ``records``."""
    out = [f"# The paper's experiments ({tier} tier)", ""]
    if machine:
        out += [f"Machine: {machine}.", ""]
    out += ["Methods from the same initial weights: **paper** = the paper's bracketed-median "
            "rule (`retrain_select(rule=\"paper\")`, proximal SGD lr 0.1, no momentum, each "
            "training stopped on entering the tolerance); **default** = `fit_sparse` with its "
            "defaults; **gmp** = gradual magnitude pruning at the default's count and epochs. "
            "λ per sample (λ/N, the authors' scale) and summed (λ, ours).", ""]
    for case in dict.fromkeys(r["case"] for r in records):
        rows = [r for r in records if r["case"] == case]
        first = rows[0]
        target = first["target"]
        rule = (f"{first['layers_required'] or len(target)} of {len(target)} layers within "
                f"± {100 * first['rel_tol']:g} %" if isinstance(target, (list, tuple))
                else f"± {100 * first['rel_tol']:g} %")
        name = "MSE" if first["metric_name"] == "mse" else "accuracy"
        out += [f"## {case}: {first['data']} ({first['n_train']} train / {first['n_test']} "
                f"test), target {target} nonzeros {rule}", ""]
        head = ["method", "met", "nnz", "nnz per layer", "trainings", "epochs",
                f"train {name}", f"test {name}", "λ/N", "λ (summed)", "seconds"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            out.append("| " + " | ".join([
                r["method"], "yes" if r["met"] else "**no**", str(r["nnz_total"]),
                str(list(r["nnz"].values())), str(r["trainings"]), f"{r['epochs']:g}",
                f"{r['train_metric']:.4g}", f"{r['test_metric']:.4g}",
                _fmt_lam(r, "lambda_mean"), _fmt_lam(r, "lambda_sum"),
                f"{r['seconds']:.1f}"]) + " |")
        notes = [f"{r['method']}: {r['note']}" for r in rows if r.get("note")]
        if case in ANCHORS:
            notes.append("anchor: " + ANCHORS[case])
        paper = next((r for r in rows if r.get("history")), None)
        if paper:
            seq = ", ".join(f"{_fmt_lam(h_lams, 'lambda_mean')} → {h['nnz_total']}"
                            for h_lams, h in ((_hist_lams(h), h) for h in paper["history"]))
            notes.append(f"paper rule, λ/N → nonzeros per training: {seq}")
        out += [""] + [f"- {t}" for t in notes] + [""]
    return "\n".join(out)


def _hist_lams(h: dict) -> dict:
    return {"lambda_mean": {k[len("lambda_mean_"):]: v for k, v in h.items()
                            if k.startswith("lambda_mean_")}}


def _figures(records: list[dict], out: Path) -> list[str]:
    """λ and nonzeros per outer iteration of the paper rule; test error against nonzeros."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no figures")
        return []
    names = []
    for case in dict.fromkeys(r["case"] for r in records):
        rows = [r for r in records if r["case"] == case]
        paper = next((r for r in rows if r.get("history")), None)
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"wspace": 0.5})
        if paper:
            it = [h["iteration"] for h in paper["history"]]
            lam = [max(_hist_lams(h)["lambda_mean"].values()) for h in paper["history"]]
            a.semilogy(it, lam, "o-", label="λ/N (largest λ_k/N per layer)")
            a2 = a.twinx()
            a2.plot(it, [h["nnz_total"] for h in paper["history"]], "s--", color="C1")
            a2.set_ylabel("nonzeros", color="C1")
            a.set_xlabel("training (outer iteration)")
            a.set_ylabel("λ / N")
            a.set_title(f"{case}: the paper rule")
            pts = [(h["nnz_total"], h["test_metric"]) for h in paper["history"]]
            b.plot(*zip(*pts), "o", label="paper rule, every training")
        for r, mark in zip(rows, "*^v"):
            b.plot([r["nnz_total"]], [r["test_metric"]], mark, markersize=11, label=r["method"])
        b.set_xscale("log")
        b.set_xlabel("nonzeros")
        b.set_ylabel(f"test {rows[0]['metric_name']}")
        b.legend(fontsize=7)
        name = f"{case}.png"
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names


def run_paper(tier: str = "quick", out: str | Path | None = None, *, cases=None,
              methods=METHODS, seed: int = 0, machine: str = "") -> list[dict]:
    """Run the paper's experiments and, with ``out``, write records, tables and figures.

    Parameters
    ----------
    tier : {"quick", "full"}
        Budgets (module docstring); ``quick`` takes about a minute on one CPU thread.
    out : path, optional
        A directory for ``records.json``, ``paper.md`` and ``<case>.png``.
    cases : sequence of str, optional
        A subset of ``"mg"``, ``"mg-layers"``, ``"cnn"``, ``"cnn-layers"`` (default all).
    methods : sequence of str
        A subset of ``"paper"``, ``"default"``, ``"gmp"``.
    seed : int
        The initial weights (the same for every method) and the data subsets.
    machine : str
        Described in the tables' header.

    Returns
    -------
    list of dict
        One record per case and method (see ``records.json``).
    """
    all_cases = paper_cases(tier)
    chosen = list(all_cases) if cases is None else list(cases)
    unknown = [c for c in chosen if c not in all_cases]
    if unknown:
        raise ValueError(f"The 'cases' parameter must name cases among {list(all_cases)}. "
                         f"Got {unknown}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"The 'methods' parameter must name methods among {list(METHODS)}. "
                         f"Got {bad}.")
    records = []
    for name in chosen:
        records += run_case(all_cases[name], methods=methods, seed=seed)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        config = {"tier": tier, "seed": seed,
                  "cases": {k: asdict(all_cases[k]) for k in chosen}}
        (out / "records.json").write_text(json.dumps(
            {"config": config, "records": records}, indent=1, default=str))
        (out / "paper.md").write_text(paper_tables(records, tier=tier, machine=machine))
        _figures(records, out)
    return records
