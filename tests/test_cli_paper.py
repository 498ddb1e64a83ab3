"""The command line of the paper's experiments (issues 21 and 23): `--mode paper`, per-layer
counts with a relative tolerance and a k-of-K rule, `--data mg` naming its own task, the
retrain schemes on the one engine, and the certificate line that says what it checked."""

import json

import pytest

from l1sparse.cli import main

SMALL = ["--hidden", "8", "--batch-size", "full", "--epochs", "150", "--quiet"]


def _result(out):
    return json.loads((out / "result.json").read_text())


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_mode_paper_on_mg_without_task(tmp_path):
    # --data mg is a regression set: no --task needed
    code = main(["fit", "--data", "mg", "--target-nnz", "30", "--mode", "paper", *SMALL,
                 "--out", str(tmp_path / "p")])
    r = _result(tmp_path / "p")
    assert code == (0 if r["converged"] else 3)
    assert r["task"] == "regression" and r["mode"] == "paper" and r["rule"] == "paper"
    assert r["converged"] and r["nnz"] == 30  # stopped as the count entered the tolerance
    assert r["lambda_mean"] == pytest.approx(r["lambda"] / r["settings"]["n_train"])
    assert "paper mode" in r["lambda_meaning"]
    history = (tmp_path / "p" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + r["outer_iterations"]
    assert history[1].split(",")[1] == "high"  # the bracket's large-λ training first


def test_layer_nnz_with_relative_tolerance_and_k_of_k(tmp_path):
    out = tmp_path / "k"
    code = main(["fit", "--data", "mg", "--layer-nnz", "fc1=30,fc2=5", "--rel-tol", "0.2",
                 "--layers-met", "1", "--mode", "paper", *SMALL, "--out", str(out)])
    r = _result(out)
    assert code == (0 if r["converged"] else 3)
    assert r["layers_required"] == 1 and r["target"]["per_layer"]
    assert r["target"]["tol_weights"] == [6, 1]  # 20 % of 30 and of 5
    counts = [layer["nnz"] for layer in r["layers"]]
    within = [abs(c - t) <= tol for c, t, tol in zip(counts, [30, 5], [6, 1])]
    assert r["converged"] == (sum(within) >= 1)


@pytest.mark.parametrize("flags,words", [
    (["--layer-nnz", "1,2,3"], ["--layer-nnz", "fc1", "fc2"]),
    (["--layer-nnz", "fc1=3,fc9=1"], ["--layer-nnz", "fc9"]),
    (["--layer-nnz", "1.5,2"], ["--layer-nnz", "whole numbers"]),
    (["--target-nnz", "30", "--layers-met", "1", "--mode", "paper"],
     ["--layers-met", "per-layer target"]),
    (["--layer-nnz", "3,2", "--layers-met", "3", "--mode", "paper"],
     ["--layers-met 3", "2 layers", "fc1, fc2"]),
    (["--layer-nnz", "3,2", "--layers-met", "1"], ["--layers-met", "--mode paper"]),
    (["--target-nnz", "30", "--tol", "1", "--rel-tol", "0.1"], ["--tol", "--rel-tol"]),
    (["--target-nnz", "30", "--rel-tol", "1.5"], ["--rel-tol", "< 1"]),
])
def test_bad_targets_are_one_line_naming_the_flag_and_layers(tmp_path, capsys, flags, words):
    code = main(["fit", "--data", "mg", *flags, *SMALL, "--out", str(tmp_path / "x")])
    line = _err_line(capsys)
    assert code == 2, line
    for w in words:
        assert w in line, (w, line)
    assert not (tmp_path / "x" / "result.json").exists()


def test_train_reproduces_the_count_of_a_retrain_fit_on_mg(tmp_path, capsys):
    common = ["--data", "mg", "--hidden", "8", "--batch-size", "full", "--epochs", "100",
              "--activation", "tanh"]
    assert main(["fit", *common, "--target-nnz", "25", "--tol", "2", "--mode", "retrain",
                 "--quiet", "--out", str(tmp_path / "r")]) in (0, 3)
    r = _result(tmp_path / "r")
    capsys.readouterr()
    assert main(["train", *common, "--lam", repr(r["lambda"])]) == 0
    table = capsys.readouterr().out
    all_row = next(ln for ln in table.splitlines() if ln.startswith("all"))
    assert int(all_row.split()[1]) == r["nnz"]


@pytest.mark.parametrize("mode", ["paper", "retrain"])
def test_an_interrupted_selection_resumes_and_ends_as_an_uninterrupted_one(
        tmp_path, capsys, monkeypatch, mode):
    import l1sparse.cli.fit as cli_fit

    flags = ["fit", "--data", "mg", "--target-nnz", "30", "--mode", mode, *SMALL]
    assert main([*flags, "--out", str(tmp_path / "whole")]) in (0, 3)
    whole = _result(tmp_path / "whole")
    assert whole["outer_iterations"] >= 3  # so that the interruption falls inside the run
    write = cli_fit._write_history
    calls = []

    def interrupt_at_the_second(path, rows):  # Ctrl-C as the second training is listed
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(path, rows)

    monkeypatch.setattr(cli_fit, "_write_history", interrupt_at_the_second)
    out = tmp_path / "cut"
    assert main([*flags, "--out", str(out)]) == 130
    assert _result(out)["interrupted"] is True
    monkeypatch.setattr(cli_fit, "_write_history", write)
    capsys.readouterr()
    code = main([*flags, "--out", str(out), "--resume"])
    resumed = _result(out)
    assert code == (0 if resumed["converged"] else 3)
    assert resumed["resumed_from_iteration"] == 1  # the checkpoint held the first training
    for key in ("lambda", "nnz", "outer_iterations", "converged", "layers"):
        assert resumed[key] == whole[key], key
    # every training listed once (the replayed one too); the rows differ only in their times
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == len((tmp_path / "whole" / "history.csv").read_text().splitlines())


def test_a_retrain_checkpoint_of_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "once"
    flags = ["fit", "--data", "mg", "--target-nnz", "30", "--mode", "paper", *SMALL]
    main([*flags, "--out", str(out)])
    capsys.readouterr()
    code = main([*flags[:-1], "--seed", "3", "--quiet", "--out", str(out), "--resume"])
    line = _err_line(capsys)
    assert code == 2 and "--seed" in line and "afresh" in line


def test_the_certificate_line_says_what_was_checked(tmp_path, capsys):
    out = tmp_path / "mb"
    main(["fit", "--data", "mg", "--target-nnz", "60", "--hidden", "16", "--steps", "200",
          "--out", str(out)])
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("stationarity"))
    # a mini-batch ReLU run: a diagnostic, why its shares are low, and how to certify
    assert "not a certificate" in line and "mini-batch" in line and "ReLU" in line
    assert "--polish with --batch-size full" in line and "--activation tanh" in line


def test_fit_polish_returns_the_lambda_of_the_polished_problem(tmp_path, capsys):
    out = tmp_path / "pol"
    code = main(["fit", "--data", "mg", "--hidden", "8", "--activation", "tanh",
                 "--batch-size", "full", "--epochs", "100", "--target-nnz", "20", "--tol", "3",
                 "--mode", "retrain", "--max-outer", "4", "--polish", "--out", str(out)])
    err = capsys.readouterr().err
    r = _result(out)
    polish = r["polish"]
    assert code == (0 if r["converged"] else 3)
    assert r["converged"] == polish["met"]  # the target is judged on the polished network
    assert "polish:" in err and "full-batch solve(s)" in err
    assert polish["solves"] == len(polish["history"]) >= 1
    assert r["lambda"] == pytest.approx(polish["lambdas"]["fc1"])  # the λ returned
    assert "polished" in r["lambda_meaning"]
    if not polish["met"]:
        assert "no lambda tried" in err


def test_reproduce_paper_calls_run_paper_and_exits_by_the_rows(tmp_path, monkeypatch, capsys):
    # the wiring only: run_paper itself (and its quick tier) is tested with the experiment
    from l1sparse.experiments import paper

    calls = []

    def fake(tier, out, *, seed, machine):
        calls.append((tier, str(out), seed))
        return [{"case": "mg", "method": m, "nnz_total": 2000, "met": met, "trainings": 1,
                 "epochs": 10.0, "metric_name": "mse", "test_metric": 0.01, "seconds": 0.1}
                for m, met in (("paper", True), ("default", miss))]

    monkeypatch.setattr(paper, "run_paper", fake)
    miss = True
    assert main(["reproduce", "--paper", "--quick", "--out", str(tmp_path), "--seed", "2"]) == 0
    miss = False
    assert main(["reproduce", "--paper", "--out", str(tmp_path), "--quiet"]) == 3
    assert calls == [("quick", str(tmp_path), 2), ("full", str(tmp_path), 0)]
    err = capsys.readouterr().err
    assert "mg          paper    nnz    2000 met" in err and "NOT met" not in err
