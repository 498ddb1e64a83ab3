"""mg at 2,000 nonzeros (full batch, seed 0): test MSE of l1sparse's default (``fit_sparse``,
warm scheduler, reweighted l1) and of GMP at several budgets, against the authors' anchor
(test MSE 0.0143 after 227,790 epochs of their paper rule).

Usage: ``OMP_NUM_THREADS=1 python docs/results/paper/mg_budgets.py default auto 3000 10000 ...``
or ``... gmp 3000 25000`` (``default-layers`` and ``paper-layers``: the per-layer case), or ``... paper 3000`` / ``... sorted 3000`` (the paper's rule or the sorted-gradient rule of
``retrain_select`` at that many epochs per training, at most 15 trainings, each stopped on
entering the tolerance); one JSON line per run on stdout ("auto": no budget given, so
``fit_sparse`` holds out 20 % and chooses the run length on it). ``mg_budgets.jsonl`` holds the
lines measured here; ``mg_budgets.md`` is written from it by ``--table``.
"""
import json
import sys
import time
from pathlib import Path

import torch

from l1sparse.baselines import gradual_magnitude_pruning
from l1sparse.data import load_mg
from l1sparse.losses import metric
from l1sparse.models import paper_mlp
from l1sparse.retrain import retrain_select
from l1sparse.select import fit_sparse

HERE = Path(__file__).parent
LAYERS = [650, 1200, 1000, 45]  # the per-layer case: ± 5 %, 3 of 4 layers


def per_layer_target(net):
    from dataclasses import replace

    from l1sparse.targets import make_target

    t = make_target(net, layer_nnz=LAYERS, tol=0)
    return replace(t, scopes=tuple(replace(sc, tol=0.05 * sc.nnz) for sc in t.scopes))


def run(method, budgets):
    torch.set_num_threads(1)
    d = load_mg()
    for b in budgets:
        net = paper_mlp(seed=0)
        t = time.perf_counter()
        layers = method.endswith("-layers")
        target = ({"target": per_layer_target(net)} if layers
                  else {"nnz": 2000, "tol": 2})
        if method.startswith("default"):
            kw = {} if b == "auto" else {"steps": int(b), "validation_fraction": 0}
            sel = fit_sparse(net, d.X_train, d.y_train, task="regression", batch_size=None,
                             seed=0, **target, **kw)
            epochs, extra = sel.epochs_total, {"lambda_sum": sel.lambdas["fc1"]}
            if sel.validation:
                extra["budget_tried"] = [r["steps"] for r in sel.validation["budget"]]
        elif method.startswith(("paper", "sorted")):
            tol = {"target": per_layer_target(net), "layers_required": 3} if layers else {
                "nnz": 2000, "rel_tol": 0.001}
            res = retrain_select(net, d.X_train, d.y_train, task="regression",
                                 rule=method.split("-")[0], epochs_per_training=int(b),
                                 max_trainings=15, **tol)
            epochs = res.epochs_total
            extra = {"trainings": res.trainings, "lambda_sum": res.lambdas["fc1"],
                     "met": res.converged}
        else:
            epochs = int(b)
            gradual_magnitude_pruning(net, d.X_train, d.y_train, task="regression",
                                      zero_fraction=1 - 2000 / 25408, epochs=epochs,
                                      frequency=max(1, epochs // 50), lr=0.1, batch_size=None,
                                      momentum=0.0, seed=0)
            extra = {}
        nnz = {n: int(torch.count_nonzero(m.weight)) for n, m in net.named_children()
               if isinstance(m, torch.nn.Linear)}
        print(json.dumps({"method": method, "budget": b, "epochs": epochs, "nnz": nnz,
                          "nnz_total": sum(nnz.values()),
                          "train_mse": metric(net, d.X_train, d.y_train, "regression"),
                          "test_mse": metric(net, d.X_test, d.y_test, "regression"),
                          "seconds": time.perf_counter() - t, **extra}), flush=True)


def table():
    rows = [json.loads(line) for line in (HERE / "mg_budgets.jsonl").read_text().splitlines()
            if line.strip()]
    out = ["# mg at 2,000 nonzeros: test MSE against the budget (full batch, seed 0)", "",
           "Written by `mg_budgets.py --table` from `mg_budgets.jsonl`. One CPU thread, shared "
           "machine (seconds are inflated by other jobs). The authors' paper rule: 227,790 "
           "epochs in 5 trainings, test MSE 0.0143 (their code, their 1,000/384 split); a third "
           "of that is 75,930 epochs. Here: the 1,000/385 split. The default at 75,000 steps is "
           "worse than at 50,000 (train MSE too): measured, not explained here.", "",
           "Rows `*-layers`: the per-layer case [650, 1200, 1000, 45] ± 5 %, 3 of 4 layers "
           "(the authors' run: [567, 1238, 1013, 45], test MSE 0.0141, 443,709 epochs in 9 "
           "trainings).", "",
           "| method | budget | epochs | nonzeros | train MSE | test MSE | ≤ 0.0143 | seconds |",
           "|---|---|---|---|---|---|---|---|"]
    order = {"default": 0, "gmp": 1, "paper": 2, "sorted": 3, "default-layers": 4,
             "paper-layers": 5}
    rows.sort(key=lambda r: (order.get(r["method"], 9), r["budget"] != "auto",
                             0 if r["budget"] == "auto" else int(r["budget"])))
    for r in rows:
        epochs = f"{r['epochs']:g}"
        if r.get("budget_tried"):  # the search's runs on 80 % of the data come on top
            epochs += f" (+ {sum(r['budget_tried']):,} searching)"
        if r.get("trainings"):
            epochs += f" in {r['trainings']} trainings"
        count = (str(list(r["nnz"].values())) if r["method"].endswith("-layers")
                 else str(r["nnz_total"]))
        if r.get("met") is False:
            count += " (not met)"
        out.append(f"| {r['method']} | {r['budget']} | {epochs} | {count} | "
                   f"{r['train_mse']:.4f} | {r['test_mse']:.4f} | "
                   f"{'yes' if r['test_mse'] <= 0.0143 else 'no'} | {r['seconds']:.0f} |")
    (HERE / "mg_budgets.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        table()
    else:
        run(sys.argv[1], sys.argv[2:])
