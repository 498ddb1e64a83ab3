"""The command line: the `fit` contract other programs rely on, and `train`."""

import json
import re
import subprocess
import sys

import numpy as np
import torch
import pytest

from l1sparse.cli import main

RESULT_KEYS = {"lambda", "lambda_per_sample", "target", "nnz", "total", "zero_fraction",
               "layers", "converged", "outer_iterations", "epochs_total", "train_metric",
               "test_metric", "seconds", "resumed_from_iteration"}


@pytest.fixture(scope="module")
def linear_csv(tmp_path_factory):
    g = np.random.default_rng(1)
    X = g.standard_normal((150, 10))
    y = X[:, :4] @ np.array([2.0, -1.5, 1.0, 0.5]) + 0.3 * g.standard_normal(150)
    path = tmp_path_factory.mktemp("data") / "lin.csv"
    header = ",".join([f"x{i}" for i in range(10)] + ["y"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="")
    return path


def test_fit_writes_the_result_contract(cls_file, tmp_path):
    out = tmp_path / "run"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "64,32",
                 "--target-sparsity", "0.9", "--optimizer", "adam", "--lr", "3e-3", "--batch-size", "64",
                 "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["converged"] is True
    assert RESULT_KEYS <= set(result)
    assert abs(result["zero_fraction"] - 0.9) <= 0.005
    assert result["nnz"] == sum(layer["nnz"] for layer in result["layers"])
    assert [layer["name"] for layer in result["layers"]] == ["fc1", "fc2", "fc3"]
    assert result["layers"][0]["shape"] == [64, 20]
    assert result["lambda_per_sample"] == pytest.approx(result["lambda"] / 1000)
    assert result["target"]["value"] == 0.9 and result["target"]["kind"] == "zero_fraction"
    assert 0.5 < result["test_metric"] <= 1.0  # accuracy; chance is 0.25
    assert result["epochs_total"] >= 20 and result["seconds"] > 0
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == result["outer_iterations"] + 1
    assert (out / "model.safetensors").stat().st_size > 0


def test_fit_exclude_leaves_the_classifier_dense_and_counts_over_the_rest(cls_file, tmp_path):
    from l1sparse.export import read_metadata

    out = tmp_path / "run"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "32,16",
                 "--target-sparsity", "0.8", "--exclude", "fc3", "--steps", "300",
                 "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["converged"]
    assert result["penalised_tensors"] == ["fc1", "fc2"]
    assert abs(result["zero_fraction"] - 0.8) <= 0.005
    assert result["unpenalised_weights"]["total"] == 16 * 4 + 32 + 16 + 4  # fc3 and biases
    assert result["unpenalised_weights"]["nnz"] >= 16 * 4 - 2  # fc3 trained dense
    assert read_metadata(out / "model.safetensors")["selection"]["exclude"] == ["fc3"]
    assert main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "8",
                 "--target-sparsity", "0.8", "--exclude", "nothing", "--steps", "10",
                 "--quiet", "--out", str(tmp_path / "bad")]) == 2


def test_fit_linear_model_from_csv_hits_an_exact_count(linear_csv, tmp_path):
    out = tmp_path / "lin"
    code = main(["fit", "--data", str(linear_csv), "--task", "regression", "--hidden", "",
                 "--target-nnz", "3", "--tol", "0", "--mode", "retrain", "--quiet",
                 "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["nnz"] == 3 and result["total"] == 10
    assert result["test_metric"] is None  # a CSV has no test split
    assert isinstance(result["lambda"], float)


def test_fit_per_layer_targets_report_lists(cls_file, tmp_path):
    out = tmp_path / "layers"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "64,32",
                 "--layer-sparsity", "0.9,0.8,0.5", "--tol", "0.03", "--optimizer", "adam", "--lr", "3e-3",
                 "--batch-size", "64", "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert isinstance(result["lambda"], list) and len(result["lambda"]) == 3
    assert code == (0 if result["converged"] else 3)
    if result["converged"]:
        for layer, target in zip(result["layers"], [0.9, 0.8, 0.5]):
            assert abs(layer["zero_fraction"] - target) <= 0.03


def test_fit_exit_3_when_the_network_does_not_work_and_results_still_written(cls_file, tmp_path):
    out = tmp_path / "short"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "64",
                 "--target-nnz", "37", "--tol", "0", "--max-outer", "1", "--epochs", "1",
                 "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    # eight steps: the final projection lands on the count, but the network does not work
    assert code == 3 and result["converged"] is True and result["final_projection"]
    assert any("no live unit" in w or "majority class" in w for w in result["warnings"])
    assert result["distance_nnz"][0] == 0


@pytest.mark.parametrize("argv,fragment", [
    (["--target-sparsity", "1.5"], "'zero_fraction' parameter must be in [0, 1). Got 1.5"),
    (["--layer-sparsity", "0.9,0.9"], "one value per penalised layer"),
    (["--target-nnz", "99999999"], "'nnz' parameter must be an integer"),
    ([], "exactly one of"),
])
def test_fit_bad_targets_exit_2_with_one_line(cls_file, tmp_path, capsys, argv, fragment):
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "8,8",
                 "--out", str(tmp_path / "bad"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_fit_missing_file_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "l1sparse", "fit", "--data", str(tmp_path / "nope.npz"),
         "--task", "regression", "--target-sparsity", "0.5", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nope.npz" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_on_builtin_regression_prints_sparsity_and_conditions(capsys):
    code = main(["train", "--task", "regression", "--lam", "5", "--epochs", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fc1" in out and "zero frac" in out and "first-order conditions" in out
    assert "test mse" in out


def test_train_per_layer_lambda_by_name(capsys):
    code = main(["train", "--task", "regression", "--layer-lam", "fc1=0,fc2=1e9,fc3=0",
                 "--epochs", "2"])
    out = capsys.readouterr().out
    assert code == 0
    fc2 = next(line for line in out.splitlines() if line.startswith("fc2"))
    assert fc2.split()[2] == "0"  # nnz of fc2 under a huge λ_2


def test_version_and_help():
    proc = subprocess.run([sys.executable, "-m", "l1sparse", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("l1sparse ")


# Flags other programs and the README rely on, per subcommand (a subset: every flag the parser
# has is checked too).
HELP_FLAGS = {
    "train": ["--data", "--task", "--hidden", "--epochs", "--lr", "--optimizer", "--seed",
              "--lam", "--layer-lam", "--config"],
    "fit": ["--data", "--task", "--target-sparsity", "--target-nnz", "--layer-sparsity", "--tol",
            "--mode", "--grad-samples", "--debias-epochs", "--out", "--resume", "--config"],
    "export": ["--format", "--compact", "--out"],
    "inspect": ["--data", "--task"],
    "reproduce": ["--quick", "--out", "--only"],
}


@pytest.mark.parametrize("command", sorted(HELP_FLAGS))
def test_help_of_each_subcommand_lists_its_flags(command, capsys):
    from l1sparse.cli import build_parser

    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: l1sparse " + command)
    sub = build_parser().commands[command]
    flags = {s for a in sub._actions for s in a.option_strings if s.startswith("--")}
    assert set(HELP_FLAGS[command]) <= flags
    described = out.split("\noptions:\n", 1)[1]  # after the usage line, which lists flags too

    def listed(flag):  # an entry of its own: "  --flag VALUE  text" or "  -h, --help  text"
        return re.search(rf"^ +(?:-\w[ ,]+)?{re.escape(flag)}(?![\w-])", described, re.M)

    missing = sorted(f for f in flags if not listed(f))
    assert missing == [], f"'l1sparse {command} --help' does not list {missing}"


def test_config_file_is_equivalent_to_the_flags(cls_file, tmp_path):
    flags = ["--data", str(cls_file), "--task", "classification", "--hidden", "64,32",
             "--target-sparsity", "0.9", "--optimizer", "adam", "--lr", "3e-3", "--batch-size", "64"]
    config = tmp_path / "fit.toml"
    config.write_text(f'[fit]\ndata = "{cls_file}"\ntask = "classification"\n'
                      'hidden = [64, 32]\ntarget-sparsity = 0.9\noptimizer = "adam"\nlr = 3e-3\nbatch-size = 64\n')
    assert main(["fit", *flags, "--quiet", "--out", str(tmp_path / "a")]) == 0
    assert main(["fit", "--config", str(config), "--quiet", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in "ab")
    assert _without_times(a) == _without_times(b)


def _without_times(obj):
    """The result without its timings ("seconds", at any depth: the held-out search's too)."""
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def test_config_flags_override_and_unknown_keys_fail(cls_file, tmp_path, capsys, monkeypatch):
    from l1sparse.cli import fit

    seen = []
    monkeypatch.setattr(fit, "cmd_fit", lambda args: seen.append(args) or 0)  # no training
    config = tmp_path / "fit.toml"
    config.write_text(f'[fit]\ndata = "{cls_file}"\ntask = "classification"\n'
                      'target-sparsity = 0.5\nlr = 0.05\nhidden = [8, 4]\nmode = "retrain"\n')
    base = ["fit", "--config", str(config), "--out", str(tmp_path / "o")]
    assert main(base) == 0
    assert main([*base, "--lr", "0.2", "--mode", "warm"]) == 0  # flags after --config
    assert main(["fit", "--lr", "0.3", *base[1:]]) == 0  # and before it
    from_file, after, before = seen
    # the file's keys take effect ...
    assert (from_file.data, from_file.task) == (str(cls_file), "classification")
    assert from_file.target_sparsity == 0.5 and from_file.lr == 0.05
    assert from_file.hidden == [8, 4] and from_file.mode == "retrain"
    # ... and a flag on the command line beats the file, wherever it stands
    assert after.lr == 0.2 and after.mode == "warm"
    assert after.target_sparsity == 0.5 and after.hidden == [8, 4]  # the rest from the file
    assert before.lr == 0.3 and before.mode == "retrain"

    config.write_text('target-sparsity = 0.5\nwidth = 3\n')
    code = main(["fit", "--config", str(config), "--data", str(cls_file), "--task",
                 "classification", "--out", str(tmp_path / "o")])
    assert code == 2 and "unknown key 'width'" in capsys.readouterr().err
    assert len(seen) == 3  # the unknown key stopped it before any fitting


def test_export_and_inspect_a_fitted_model(cls_file, tmp_path, capsys):
    from l1sparse.export import load

    out = tmp_path / "run"
    assert main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "64,32",
                 "--target-sparsity", "0.9", "--optimizer", "adam", "--lr", "3e-3", "--batch-size", "64", "--quiet",
                 "--out", str(out)]) == 0
    csr = tmp_path / "model.csr.safetensors"
    assert main(["export", str(out), "--format", "csr", "--out", str(csr)]) == 0
    dense, sparse = load(out / "model.safetensors"), load(csr)
    x = torch.randn(16, 20)
    torch.testing.assert_close(dense(x), sparse(x), rtol=0, atol=0)
    assert csr.stat().st_size < (out / "model.safetensors").stat().st_size
    capsys.readouterr()
    assert main(["inspect", str(csr), "--data", str(cls_file)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    fc1 = next(line for line in printed.splitlines() if line.startswith("fc1"))
    assert int(fc1.split()[2]) == result["layers"][0]["nnz"]
    assert f"{result['lambda']:.5g}" in fc1
    assert "first-order conditions" in printed
    units = next(line for line in printed.splitlines() if line.startswith("hidden units"))
    live = [int(part.split()[2].split("/")[0]) for part in units.split(": ", 1)[1].split("; ")]

    small = tmp_path / "compact.safetensors"
    assert main(["export", str(out), "--format", "dense", "--compact", "--out", str(small)]) == 0
    compacted = load(small)
    # every unit without input or output is gone (dropping one can silence another: hence ≤)
    assert all(c <= n for c, n in zip(compacted.hidden, live)) and compacted.hidden != [64, 32]
    torch.testing.assert_close(compacted(x), dense(x), rtol=1e-5, atol=1e-5)


def test_debias_keeps_the_zeros_and_records_the_l1_solution(cls_file, tmp_path):
    out = tmp_path / "debiased"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "64,32",
                 "--target-sparsity", "0.9", "--batch-size", "64", "--debias-epochs", "2",
                 "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["debias"]["epochs"] == 2
    assert abs(result["zero_fraction"] - 0.9) <= 0.005  # the support did not change
    assert set(result["debias"]["l1_solution"]) == {"train_metric", "test_metric"}
    assert result["train_metric"] >= result["debias"]["l1_solution"]["train_metric"] - 0.01


def test_fit_keeps_the_weighted_penalty_and_inspect_checks_its_conditions(cls_file, tmp_path,
                                                                          capsys):
    out = tmp_path / "w"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "16",
                 "--target-sparsity", "0.8", "--steps", "600", "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["penalty"] == "reweighted"
    from safetensors.torch import load_file

    c = load_file(str(out / "penalty_weights.safetensors"))
    assert sorted(c) == ["fc1", "fc2"] and all(bool((v > 0).all()) for v in c.values())
    capsys.readouterr()
    assert main(["inspect", str(out), "--data", str(cls_file), "--task", "classification"]) == 0
    assert "weighted penalty" in capsys.readouterr().out
    plain = tmp_path / "p"
    assert main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "16",
                 "--target-sparsity", "0.8", "--steps", "600", "--penalty", "l1", "--quiet",
                 "--out", str(plain)]) == 0
    assert json.loads((plain / "result.json").read_text())["penalty"] == "l1"
    assert not (plain / "penalty_weights.safetensors").exists()


def test_train_with_the_reweighted_penalty(cls_file, capsys):
    common = ["train", "--data", str(cls_file), "--task", "classification", "--hidden", "16",
              "--lam", "3", "--epochs", "4"]
    assert main([*common, "--penalty", "reweighted"]) == 0
    weighted = capsys.readouterr().out
    assert main(common) == 0
    plain = capsys.readouterr().out
    assert "stationarity at lambda" in weighted and weighted != plain
    assert main([*common, "--penalty", "reweighted", "--batch-size", "full"]) == 2
    err = capsys.readouterr().err
    assert "--penalty reweighted needs mini-batch" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("k", [100, 357])
def test_fit_target_nnz_means_exactly_k_by_default(cls_file, tmp_path, k):
    out = tmp_path / f"k{k}"
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "32",
                 "--target-nnz", str(k), "--steps", "800", "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["nnz"] == k and result["attained"] == k
    assert result["target"]["tol"] == 0 and result["target_words"] == f"{k} nonzeros exactly"


def test_fit_val_fraction_chooses_the_held_out_share(cls_file, tmp_path):
    """--val-fraction: 0 trains on everything (no split, 'validation' null); a share holds
    that much out (its size and metric in result.json); auto holds out 20 % on small data."""
    common = ["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "16",
              "--target-sparsity", "0.8", "--quiet", "--steps", "300"]
    assert main(common + ["--val-fraction", "0", "--out", str(tmp_path / "a")]) in (0, 3)
    none = json.loads((tmp_path / "a" / "result.json").read_text())
    assert none["validation"] is None
    assert main(common + ["--val-fraction", "0.25", "--out", str(tmp_path / "b")]) in (0, 3)
    split = json.loads((tmp_path / "b" / "result.json").read_text())
    assert split["validation"]["fraction"] == 0.25 and split["validation"]["source"] == "split"
    assert 0.0 <= split["validation"]["metric"] <= 1.0
    assert split["steps"] == none["steps"] == 300  # a given budget is not searched


@pytest.mark.parametrize("argv, fragment", [
    (["--val-fraction", "1"], "--val-fraction"),
    (["--val-fraction", "lots"], "--val-fraction"),
    (["--val-fraction", "0.2", "--mode", "retrain"], "warm mode"),
])
def test_fit_val_fraction_bad_values_exit_2(cls_file, tmp_path, capsys, argv, fragment):
    code = main(["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "16",
                 "--target-sparsity", "0.8", "--quiet", "--out", str(tmp_path / "r")] + argv)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err
    assert not (tmp_path / "r" / "result.json").exists()
