"""T5: how well the chosen networks meet the first-order conditions at their λ_k (paper §3).

For each selected network and each layer: the nonzeros with ``|∂L/∂w_j + λ_k sign(w_j)| ≤
tol·λ_k``, the zeros with ``|∂L/∂w_j| ≤ (1 + tol)·λ_k`` (:func:`l1sparse.characterize`), and,
because a stochastically trained network is only near a stationary point, the median of the
relative residual ``|∂L/∂w_j + λ_k sign(w_j)| / λ_k`` over the nonzeros, which says how near.
The gradient is that of the summed fidelity over the whole training set. A network selected
with a weighted penalty (reweighted ℓ1, the default of ``fit``) is checked against the weighted
conditions, ``λ_k c_j`` in place of ``λ_k`` (:func:`l1sparse.characterize.stationarity`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import copy

from ..characterize import characterize, full_gradient, stationarity
from ..penalty import penalised_layers
from ..polish import polish
from .common import Column, Run, Table

__all__ = ["SMOOTH_ACTIVATIONS", "T5_COLUMNS", "characterization_rows", "characterization_table",
           "polished_rows"]

# activations whose networks the full-batch polish can bring to a stationary point
SMOOTH_ACTIVATIONS = ("tanh", "sigmoid", "gelu", "elu")

T5_COLUMNS = [
    Column("table", "from"),
    Column("run", "run"),
    Column("layer", "layer"),
    Column("lambda", "λ_k", "{:.4g}"),
    Column("nnz_ok", "nonzeros ok"),
    Column("zero_ok", "zeros ok"),
    Column("share_ok", "share ok", "{:.4f}"),
    Column("nnz_share_ok", "nonzeros ok (share)", "{:.4f}"),
    Column("zero_share_ok", "zeros ok (share)", "{:.4f}"),
    Column("median_residual", "median resid./λ_k (nonzeros)", "{:.3g}"),
    Column("max_violation", "max viol./λ_k", "{:.3g}"),
    Column("polish_seconds", "polish s", "{:.2f}"),
]


def characterization_rows(run: Run, X: Tensor, y: Tensor, *, task: str, tol: float
                          ) -> list[dict]:
    """One row per penalised layer of ``run.model`` at ``run.lambdas``; for a selection with
    a weighted penalty (its ``penalty_weights`` c_i), the weighted conditions."""
    model = run.model
    model.eval()
    grad = full_gradient(model, X, y, task=task)
    weights = getattr(run.selection, "penalty_weights", None)
    if weights:
        st = stationarity(model, None, None, task=task, lambdas=run.lambdas, weights=weights,
                          tol=tol, gradient=grad)
        return [_stationarity_row(run.table, run.label, layer) for layer in st.layers]
    report = characterize(model, X, y, task=task, lambdas=run.lambdas, tol=tol, gradient=grad)
    rows = []
    with torch.no_grad():
        for (name, module), layer in zip(penalised_layers(model), report.layers):
            w = module.weight
            nonzero = w != 0
            lam = layer.lam
            resid = (grad.weights[name] + lam * torch.sign(w))[nonzero].abs()
            median = float(resid.median()) / lam if resid.numel() and lam > 0 else None
            rows.append({
                "table": run.table, "run": run.label, "layer": name, "lambda": lam,
                "nnz": layer.nnz, "n_zero": layer.n_zero,
                "nnz_ok": f"{layer.nnz_ok}/{layer.nnz}",
                "zero_ok": f"{layer.zero_ok}/{layer.n_zero}",
                "share_ok": layer.share_ok,
                "nnz_share_ok": layer.nnz_ok / layer.nnz if layer.nnz else None,
                "zero_share_ok": layer.zero_ok / layer.n_zero if layer.n_zero else None,
                "median_residual": median, "max_violation": layer.max_violation,
            })
    return rows


def polished_rows(run: Run, X: Tensor, y: Tensor, *, task: str, tol: float) -> list[dict]:
    """Rows for a copy of ``run.model`` polished once at ``run.lambdas`` (full batch,
    :func:`l1sparse.polish.polish`); the run's own network is left as it was."""
    model = copy.deepcopy(run.model)
    result = polish(model, X, y, task=task, lambdas=run.lambdas)
    model.eval()
    st = stationarity(model, X, y, task=task, lambdas=run.lambdas, tol=tol)
    return [{**_stationarity_row(run.table, f"{run.label}, polished", layer),
             "polish_seconds": result.seconds, "polish_converged": result.converged}
            for layer in st.layers]


def _stationarity_row(table: str, label: str, layer: dict) -> dict:
    """A T5 row from one layer of :func:`l1sparse.characterize.stationarity`."""
    n, z = layer["nnz"], layer["n_zero"]
    nz_ok = round((layer["nonzeros_ok"] or 0.0) * n)
    z_ok = round((layer["zeros_ok"] or 0.0) * z)
    return {
        "table": table, "run": label, "layer": layer["name"],
        "lambda": layer["lambda"], "nnz": n, "n_zero": z,
        "nnz_ok": f"{nz_ok}/{n}", "zero_ok": f"{z_ok}/{z}",
        "share_ok": (nz_ok + z_ok) / max(1, n + z),
        "nnz_share_ok": layer["nonzeros_ok"], "zero_share_ok": layer["zeros_ok"],
        "median_residual": layer["median_residual"], "max_violation": layer["max_violation"],
    }


def characterization_table(groups: Sequence[tuple[Sequence[Run], Tensor, Tensor, str]], *,
                           tol: float, polish_tasks: Sequence[str] = ()) -> Table:
    """T5 from ``(runs, X_train, y_train, task)`` groups; the dense runs are skipped.

    For the tasks in ``polish_tasks``, each selected network with a smooth activation
    (:data:`SMOOTH_ACTIVATIONS`) also gets rows for a copy polished once at its λ_k.
    """
    rows = []
    polished = weighted = False
    for runs, X, y, task in groups:
        for run in runs:
            if run.selection is not None:
                rows.extend(characterization_rows(run, X, y, task=task, tol=tol))
                weighted = weighted or bool(getattr(run.selection, "penalty_weights", None))
                if task in polish_tasks and \
                        getattr(run.model, "activation", None) in SMOOTH_ACTIVATIONS:
                    rows.extend(polished_rows(run, X, y, task=task, tol=tol))
                    polished = True
    caption = (
        "First-order conditions at the chosen λ_k, per layer, with the gradient of the summed "
        "fidelity over the whole training set: nonzeros ok = |∂L/∂w_j + λ_k sign(w_j)| ≤ "
        f"{tol:g}·λ_k, zeros ok = |∂L/∂w_j| ≤ (1 + {tol:g})·λ_k; share ok = both together over "
        "all weights of the layer (the `share_ok` of `characterize`). The median relative "
        "residual over the nonzeros shows how close the stochastically trained network is to "
        "a stationary point (0 at an exact one); max viol. is the largest violation of either "
        "condition relative to λ_k.")
    if weighted:
        caption += (
            " Rows of a weighted penalty (the default rows, reweighted ℓ1 λ_k Σ c_i |w_i|) "
            "are checked against the weighted conditions, with each weight's c_i in place of "
            f"1: |∂L/∂w_j + λ_k c_j sign(w_j)| ≤ {tol:g}·λ_k c_j, |∂L/∂w_j| ≤ (1 + {tol:g})·"
            "λ_k c_j, residuals relative to λ_k c_j.")
    if polished:
        caption += (
            " Rows marked 'polished' are a copy of the network above them after one full-batch "
            "solve at the same λ_k (float64, active-set L-BFGS-B on the weights' orthants, "
            "`l1sparse.polish`; its nnz may differ from the target's: `fit --polish` "
            "re-chooses λ to keep it), which the smooth activation makes possible; 'polish s' "
            "is its time.")
    return Table("T5", "First-order conditions at the chosen λ", caption, T5_COLUMNS, rows)
