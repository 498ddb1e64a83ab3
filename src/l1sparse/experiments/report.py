"""Tables and figures on disk: Markdown and CSV per table, PNG figures, ``report.md``,
``summary.json`` and ``config.json``.

Figures use matplotlib's Agg backend (no display needed); matplotlib is imported only here, so
the rest of the library does not depend on it. (Slightly over 500 lines: the six figures of
``reproduce`` belong together with the writers of the records they are drawn from.)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .common import METHOD_WORDS, Run, Table, fmt_value, history_points

__all__ = [
    "Figure",
    "ReportContext",
    "figures",
    "write_histories",
    "write_json",
    "write_path",
    "write_report",
    "write_table",
    "write_text",
]

log = logging.getLogger(__name__)


@dataclass
class Figure:
    """A PNG written to ``out/<name>`` and its caption."""

    name: str
    title: str
    caption: str


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a temporary file renamed into place)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_table(out: Path, table: Table) -> tuple[str, str]:
    """``<slug>.md`` (title, caption, table) and ``<slug>.csv``; returns their names."""
    md, cs = f"{table.slug}.md", f"{table.slug}.csv"
    write_text(out / md, f"# {table.key}. {table.title}\n\n{table.to_markdown()}\n\n"
                         f"{table.caption}\n")
    write_text(out / cs, table.to_csv())
    return md, cs


def write_histories(out: Path, runs: Sequence[Run]) -> str:
    """Every outer iteration of every selection in one CSV (``histories.csv``)."""
    rows = []
    for run in runs:
        if run.selection is None:
            continue
        for record in run.selection.history:
            rows.append({"table": run.table, "run": run.label, **record.as_row()})
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (";".join(repr(x) for x in v) if isinstance(v, list) else v)
                         for k, v in row.items()})
    write_text(out / "histories.csv", buf.getvalue())
    return "histories.csv"


def write_path(out: Path, path, name: str, metric: str) -> str:
    """A λ path as ``lambda_path_<name>.csv`` (``metric``: the test metric's column name)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    names = list(path[0].nnz) if path else []
    writer.writerow(["lambda", "nnz", "zero_fraction", "loss", metric, "seconds",
                     *[f"nnz_{n}" for n in names]])
    for p in path:
        writer.writerow([repr(p.lam), p.nnz_total, repr(p.zero_fraction), repr(p.loss),
                         "" if p.metric is None else repr(p.metric), f"{p.seconds:.3f}",
                         *[p.nnz[n] for n in names]])
    filename = f"lambda_path_{name}.csv"
    write_text(out / filename, buf.getvalue())
    return filename


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _plt().close(fig)


def _selected(runs: Sequence[Run], table: str, method: str | None = None) -> list[Run]:
    """The selected networks of ``table`` (all methods, or only ``method``)."""
    return [r for r in runs if r.table == table and r.selection is not None
            and (method is None or r.method == method)]


def _methods(runs: Sequence[Run]) -> list[str]:
    """The methods of the selected runs, in order of appearance."""
    out: list[str] = []
    for r in runs:
        if r.selection is not None and r.method not in out:
            out.append(r.method)
    return out


def _dense(runs: Sequence[Run]) -> Run | None:
    return next((r for r in runs if r.selection is None), None)


def _zero_fraction(run: Run) -> float:
    nnz = sum(int(torch.count_nonzero(m.weight)) for m in _linears(run))
    total = sum(m.weight.numel() for m in _linears(run))
    return 1 - nnz / total


def _linears(run: Run):
    return [m for m in run.model.modules() if isinstance(m, torch.nn.Linear)]


def fig_nnz_vs_lambda(out: Path, reg, cls) -> Figure | None:
    panels = []
    if reg is not None and (reg.path or _selected(reg.runs, "T1", "paper")):
        panels.append(reg)
    if cls is not None and (cls.path or _selected(cls.runs, "T3", "paper")):
        panels.append(cls)
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, res in zip(axes[0], panels):
        table = "T1" if res is reg else "T3"
        total = sum(m.weight.numel() for m in _linears(res.runs[0]))
        if getattr(res, "path", None):
            ax.plot([p.lam for p in res.path], [p.nnz_total for p in res.path], "o-", color="0.3",
                    ms=3, lw=1.2, label=f"λ path from the dense net ({res.config.path_epochs} "
                                        "epoch(s) per λ)")
        for k, run in enumerate(_selected(res.runs, table, "paper")):
            color = f"C{k}"
            pts = history_points(run.selection)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color=color, alpha=0.5)
            lam = next(iter(run.lambdas.values()))
            nnz = sum(run.selection.nnz.values())
            ax.scatter([lam], [nnz], marker="*", s=160, color=color, edgecolor="k", zorder=5,
                       label=f"{run.label}: chosen λ = {lam:.3g}")
            target = (1 - run.selection.target.value) * total
            ax.axhline(target, color=color, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("λ (summed-loss scale)")
        ax.set_ylabel(f"nonzero weights (of {total})")
        ax.set_title("regression (T1)" if res is reg else f"classification (T3, {res.data.name})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    name = "nnz_vs_lambda.png"
    _save(fig, out / name)
    return Figure(name, "Nonzero weights against λ", (
        "Number of nonzero weights against λ (both axes logarithmic). Small dots: the outer "
        "iterations of each selection (warm mode: the network after each training piece at "
        "that iteration's λ); stars: the λ chosen and the nonzeros attained; dotted lines: the "
        "targets; grey line: the warm-started λ path from the dense network, whose points "
        "the selections start from. Plain-ℓ1 selections (the paper's protocol) only: the "
        "default rows' λ multiplies the reweighted penalty and is not on this scale. "
        "Hyperparameters as in T1 and T3."))


def fig_error_vs_sparsity(out: Path, reg, cls) -> Figure | None:
    panels = [p for p in (reg, cls) if p is not None]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, res in zip(axes[0], panels):
        if res is reg:
            key, label = "test_rel_error", "test relative L2 error vs f"
            if res.path:
                ax.plot([p.zero_fraction for p in res.path], [p.metric for p in res.path],
                        "o-", color="0.6", ms=3, lw=1, label="λ path (not selected)")
            ax.axhline(res.baseline_test_rel_error, color="k", ls=":", lw=1,
                       label=f"training mean ({res.baseline_test_rel_error:.3f})")
            ax.axhline(res.dense_test_rel_error, color="k", ls="--", lw=1,
                       label=f"dense ({res.dense_test_rel_error:.3f})")
            single, multi = "T1", "T2"
            title = f"regression ({res.config.function})"
        else:
            key, label = "test_accuracy", "test accuracy"
            if res.path:
                ax.plot([p.zero_fraction for p in res.path], [p.metric for p in res.path],
                        "o-", color="0.6", ms=3, lw=1, label="λ path (not selected)")
            ax.axhline(res.chance_accuracy, color="k", ls=":", lw=1,
                       label=f"chance ({res.chance_accuracy:.3f})")
            ax.axhline(res.dense_test_accuracy, color="k", ls="--", lw=1,
                       label=f"dense ({res.dense_test_accuracy:.3f})")
            single, multi = "T3", "T4"
            title = f"classification ({res.data.name})"
        styles = {"paper": ("s-", "C0", "D", "C3"), "default": ("o-", "C2", "P", "C1")}
        for method in _methods(res.runs):
            line, color, marker, color_k = styles.get(method, styles["paper"])
            suffix = ("" if _methods(res.runs) == ["paper"] else
                      f", {METHOD_WORDS.get(method, method)}")
            one = _selected(res.runs, single, method)
            if one:
                ax.plot([_zero_fraction(r) for r in one], [r.metrics[key] for r in one], line,
                        color=color, label=f"{single}: one λ{suffix}")
            for r in _selected(res.runs, multi, method):
                ax.plot([_zero_fraction(r)], [r.metrics[key]], marker, color=color_k, ms=8,
                        label=f"{multi}: λ_k per layer{suffix}")
        ax.set_xlabel("share of zero weights")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    name = "error_vs_sparsity.png"
    _save(fig, out / name)
    return Figure(name, "Error and accuracy against sparsity", (
        "Left: test relative L2 error against the noise-free function for the selected "
        "networks (T1 squares, T2 diamond), the networks along the λ path (grey; trained only "
        "a few epochs per λ, at constant learning rate), the dense network and the trivial "
        "predictor. Right: test accuracy of the selected networks (T3 with plain ℓ1 as in the "
        "paper: squares, T4: diamond; T3 with the default of `fit`, reweighted ℓ1 with the "
        "scheduler: circles, T4: plus), along the λ path, of the dense network and of chance "
        "(majority class). Hyperparameters as in T1–T4."))


def fig_nnz_per_layer(out: Path, reg, cls) -> Figure | None:
    groups = []
    if reg is not None:
        groups.append(("regression", [r for r in reg.runs if r.selection is not None]))
    if cls is not None:
        groups.append((f"classification ({cls.data.name})",
                       [r for r in cls.runs if r.selection is not None]))
    groups = [g for g in groups if g[1]]
    if not groups:
        return None
    plt = _plt()
    wide = max(6.2, 2.5 + 0.45 * max(len(g[1]) for g in groups))
    fig, axes = plt.subplots(1, len(groups), figsize=(wide * len(groups), 4.4), squeeze=False)
    for ax, (title, runs) in zip(axes[0], groups):
        names = [n for n, m in runs[0].model.named_modules() if isinstance(m, torch.nn.Linear)]
        totals = [m.weight.numel() for m in _linears(runs[0])]
        width = 0.8 / (len(runs) + 1)
        xs = range(len(names))
        ax.bar([x - 0.4 + width / 2 for x in xs], totals, width, color="0.85",
               edgecolor="0.5", label="all weights")
        for k, run in enumerate(runs, start=1):
            counts = [int(torch.count_nonzero(m.weight)) for m in _linears(run)]
            ax.bar([x - 0.4 + width * (k + 0.5) for x in xs], counts, width, color=f"C{k - 1}",
                   label=f"{run.table} {run.label}")
        ax.set_xticks(list(xs), [f"{n}\n{t}" for n, t in zip(names, totals)])
        ax.set_yscale("log")
        ax.set_ylabel("nonzero weights")
        ax.set_title(title)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    name = "nnz_per_layer.png"
    _save(fig, out / name)
    return Figure(name, "Nonzeros per layer", (
        "Nonzero weights per layer (logarithmic axis) of every selected network, next to the "
        "layer's size (grey; the size is also under each layer's name). One λ for all layers "
        "(T1, T3) prunes the layers very differently; one λ_k per layer (T2, T4) sets each "
        "layer's share. Hyperparameters as in T1–T4."))


def _side(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n else None


def fig_input_pixels(out: Path, cls) -> Figure | None:
    if cls is None:
        return None
    runs = [r for r in cls.runs if r.selection is not None]
    side = _side(cls.data.n_features)
    if not runs or side is None:
        return None
    plt = _plt()
    methods = _methods(runs)
    by_method = [[r for r in runs if r.method == m] for m in methods]
    n = max(len(g) for g in by_method) + 1
    fig, axes = plt.subplots(len(methods), n, figsize=(2.6 * n, 3.2 * len(methods)),
                             squeeze=False)
    mean = cls.data.X_train.reshape(cls.data.n_train, -1).mean(0).reshape(side, side)
    axes[0][0].imshow(mean.numpy(), cmap="gray_r")
    axes[0][0].set_title("mean training image", fontsize=8)
    for row, group in zip(axes, by_method):
        for ax, run in zip(row[1:], group):
            w = _linears(run)[0].weight.detach()
            counts = (w != 0).sum(0).reshape(side, side)
            reads = int((counts > 0).sum())
            im = ax.imshow(counts.numpy(), cmap="viridis")
            ax.set_title(f"{run.table} {run.label}\n{reads}/{side * side} pixels read",
                         fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        for ax in row[1 + len(group):]:
            ax.axis("off")
    for k, row in enumerate(axes):
        if k:
            row[0].axis("off")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    name = "input_pixels.png"
    _save(fig, out / name)
    return Figure(name, "Which pixels the sparse networks still read", (
        f"For each selected network, the number of surviving first-layer connections per input "
        f"pixel ({side}×{side}; how many of the {cls.config.hidden[0]} first hidden units still "
        "read it), with the number of pixels read at all; one row per method (plain ℓ1 as in "
        "the paper, the default of `fit`); top left, the mean training image for "
        f"reference. Data {cls.data.name}; hyperparameters as in T3 and T4."))


def fig_hidden_units(out: Path, cls, n_units: int = 16) -> Figure | None:
    if cls is None:
        return None
    runs = _selected(cls.runs, "T3", "paper") or _selected(cls.runs, "T3")
    side = _side(cls.data.n_features)
    if not runs or side is None:
        return None
    run = max(runs, key=_zero_fraction)
    w = _linears(run)[0].weight.detach()
    alive = (w != 0).sum(1)
    order = alive.argsort(descending=True)[:min(n_units, int((alive > 0).sum()))]
    if order.numel() == 0:
        return None
    plt = _plt()
    cols = min(8, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, unit in zip(axes.flat, order.tolist()):
        img = w[unit].reshape(side, side)
        vmax = float(img.abs().max()) or 1.0
        ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"unit {unit}: {int(alive[unit])}", fontsize=7)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    n_dead = int((alive == 0).sum())
    fig.suptitle(f"{run.label}: first-layer weights of the {len(order)} hidden units with the "
                 f"most inputs ({n_dead} of {w.shape[0]} units read no pixel)", fontsize=9)
    name = "hidden_units.png"
    _save(fig, out / name)
    return Figure(name, "Surviving input connections of single hidden units", (
        f"First-layer weights of the sparsest T3 network ({run.label}), one {side}×{side} "
        "image per hidden unit (red positive, blue negative, white exactly zero), for the "
        "units with the most surviving connections; the number above each image counts its "
        "nonzero inputs. Hyperparameters as in T3."))


def fig_regression_fit(out: Path, reg) -> Figure | None:
    if reg is None or reg.config.dim != 1:
        return None
    from ..data import ground_truth

    plt = _plt()
    x = torch.linspace(-1, 1, 400).reshape(-1, 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(reg.data.X_train[:, 0], reg.data.y_train[:, 0], s=3, color="0.75",
               label="training data")
    ax.plot(x[:, 0], ground_truth(reg.config.function, x, 1)[:, 0], "k-", lw=2, label="f")
    for k, run in enumerate(r for r in reg.runs if r.table == "T1"):
        run.model.eval()
        with torch.no_grad():
            pred = run.model(x)[:, 0]
        ax.plot(x[:, 0], pred, lw=1.2, color=f"C{k}",
                label=f"{run.label} ({_zero_fraction(run):.3f} zeros)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    name = "regression_fit.png"
    _save(fig, out / name)
    return Figure(name, "The regression fits", (
        f"The noise-free function f ({reg.config.function}, black), the noisy training data "
        "(grey) and the dense and selected T1 networks. Hyperparameters as in T1."))


def figures(out: Path, reg, cls) -> list[Figure]:
    """Draw every figure the available results allow; returns what was written."""
    made = [
        fig_nnz_vs_lambda(out, reg, cls),
        fig_error_vs_sparsity(out, reg, cls),
        fig_nnz_per_layer(out, reg, cls),
        fig_regression_fit(out, reg),
        fig_input_pixels(out, cls),
        fig_hidden_units(out, cls),
    ]
    return [f for f in made if f is not None]


# --------------------------------------------------------------------------- the report


@dataclass
class ReportContext:
    """What ``report.md`` says about the run as a whole."""

    title: str
    variant: str
    command: str
    environment: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def write_report(out: Path, context: ReportContext, tables: Sequence[Table],
                 figs: Sequence[Figure], records: Sequence[dict], files: dict[str, str]) -> str:
    """``report.md``: every table with its caption and CSV, every figure with its caption."""
    lines = [f"# {context.title}", ""]
    lines.append(f"Variant: **{context.variant}**. Command: `{context.command}`.")
    env = ", ".join(f"{k} {v}" for k, v in context.environment.items())
    if env:
        lines.append(f"Environment: {env}.")
    if context.seconds:
        lines.append("Wall-clock seconds: " + ", ".join(
            f"{k} {v:.1f}" for k, v in context.seconds.items()) + ".")
    lines.append("")
    missed = [r for r in records if not r.get("converged")]
    if records:
        if missed:
            lines.append(f"**{len(missed)} of {len(records)} targets were NOT met** (column "
                         "'met' says NO): " + "; ".join(_missed_words(r) for r in missed)
                         + ".")
        else:
            lines.append(f"All {len(records)} sparsity targets were met within their "
                         "tolerance.")
        broken = [r for r in records if r.get("warnings")]
        if broken:
            lines.append("Networks that meet their count but may not work: " + "; ".join(
                f"{r['table']} {_method_words(r)}target {fmt_value(r['target'], '{:g}')}: "
                + ", ".join(r["warnings"]) for r in broken) + ".")
        lines.append("")
    lines += [
        "Sparsity is the share of weights that are exactly zero (biases are never penalised "
        "and not counted); λ is on the summed-loss scale of the paper (the training loss is "
        "summed over samples, not averaged). Machine-readable results: "
        "[summary.json](summary.json) (one record per row with a target), "
        "[config.json](config.json) (every hyperparameter), "
        "[histories.csv](histories.csv) (every outer iteration of every selection)"
        + "".join(f", [{f}]({f}) (the {k} λ path)" for k, f in files.get("paths", {}).items())
        + ".", ""]
    for table in tables:
        md, cs = files[table.key]
        lines += [f"## {table.key}. {table.title}", "", table.to_markdown(), "",
                  f"*{table.key}.* {table.caption} ([Markdown]({md}), [CSV]({cs}))", ""]
    if figs:
        lines += ["## Figures", ""]
        for k, fig in enumerate(figs, start=1):
            lines += [f"### Figure {k}. {fig.title}", "", f"![{fig.title}]({fig.name})", "",
                      f"*Figure {k}.* {fig.caption}", ""]
    text = "\n".join(lines)
    write_text(out / "report.md", text)
    return "report.md"


def _method_words(record: dict) -> str:
    method = record.get("method")
    return f"({METHOD_WORDS.get(method, method)}) " if method else ""


def _missed_words(record: dict) -> str:
    """A missed target in words: table, method, target, attained, and the live units of the
    first hidden layer where the record has them."""
    text = (f"{record['table']} {_method_words(record)}target "
            f"{fmt_value(record['target'], '{:g}')} attained "
            f"{fmt_value(record['attained'], '{:.4f}')}")
    if record.get("live_units") is not None:
        text += (f", with {record['live_units']} of {record.get('live_units_of', '?')} "
                 f"{record.get('live_units_layer', 'first-layer')} units live")
    return text


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
