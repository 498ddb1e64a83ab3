"""The command line for careless users and real data: one clear line, honest exit codes,
nothing overwritten, no code run from a checkpoint (issue 15)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from l1sparse.cli import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_PIPE_CLOSED,
    _read_checkpoint,
    _save_checkpoint,
    build_parser,
    main,
)

TINY = ["--hidden", "8", "--epochs", "2", "--max-outer", "2"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "L1SPARSE_THREADS": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny data: 3 classes (40 train, 20 test), labels 1..3, unseen test labels, a regression
    CSV with an unscaled target (about 100 ± 50) and its test CSV, and 6-feature test data."""
    d = tmp_path_factory.mktemp("careless")
    g = np.random.default_rng(0)
    X = g.standard_normal((60, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)
    np.savez(d / "cls.npz", X_train=X[:40], y_train=y[:40], X_test=X[40:], y_test=y[40:])
    np.savez(d / "cls13.npz", X_train=X[:40], y_train=y[:40] + 1)
    y_unseen = y[40:].copy()
    y_unseen[:3] = 5
    np.savez(d / "unseen.npz", X_train=X[:40], y_train=y[:40], X_test=X[40:], y_test=y_unseen)
    np.savez(d / "six.npz", X_train=g.standard_normal((10, 6)), y_train=np.arange(10) % 3)
    yr = 100 + 50 * X[:, 0] + X[:, 1] ** 2
    header = "a,b,c,d,e,y"
    np.savetxt(d / "reg.csv", np.column_stack([X[:40], yr[:40]]), delimiter=",",
               header=header, comments="")
    np.savetxt(d / "reg_test.csv", np.column_stack([X[40:], yr[40:]]), delimiter=",",
               header=header, comments="")
    return d


def _fit(files, out, *extra, data="cls.npz", task="classification"):
    return ["fit", "--data", str(files / data), "--task", task, *TINY,
            "--target-sparsity", "0.5", "--tol", "0.1", "--out", str(out), *extra]


def _one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="module")
def fitted(files, tmp_path_factory):
    """A finished run on the classification data (exit 0 or 3: both write the results)."""
    out = tmp_path_factory.mktemp("fitted") / "run"
    assert main(_fit(files, out)) in (0, 3)
    return out


# --------------------------------------------------------------------------- bad inputs

BAD = [
    # (argv after the data flags, words the one line must contain)
    (["--batch-size", "0"], ["--batch-size", "positive integer", "'full'", "'0'"]),
    (["--batch-size", "many"], ["--batch-size", "positive integer"]),
    (["--lr", "0"], ["--lr", "> 0", "'0'"]),
    (["--lr", "-0.1"], ["--lr", "> 0"]),
    (["--lr", "fast"], ["--lr", "a number"]),
    (["--epochs", "x"], ["--epochs", "an integer >= 1"]),
    (["--epochs", "0"], ["--epochs", ">= 1"]),
    (["--momentum", "1.5"], ["--momentum", "< 1"]),
    (["--max-outer", "0"], ["--max-outer", ">= 1"]),
    (["--optimizer", "lbfgs"], ["--optimizer", "sgd", "adam"]),
    (["--activation", "swish"], ["--activation", "relu", "tanh"]),
    (["--mode", "cold"], ["--mode", "warm", "retrain"]),
    (["--hidden", "a,b"], ["--hidden", "comma-separated integers"]),
    (["--layer-sparsity", "fc1=x"], ["--layer-sparsity", "fc1=0.9"]),
    (["--force", "--resume"], ["--force", "--resume"]),
    (["--bogus"], ["--bogus", "--help"]),
]


@pytest.mark.parametrize("argv,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flag_exits_2_with_one_line_naming_it(files, tmp_path, capsys, argv, words):
    out = tmp_path / "o"
    code = main(["fit", "--data", str(files / "cls.npz"), "--task", "classification",
                 "--target-sparsity", "0.5", "--out", str(out), *argv])
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert code == EXIT_BAD_INPUT
    for word in words:
        assert word in line, (word, line)
    assert "usage:" not in captured.err and "Traceback" not in captured.out
    assert not out.exists()  # refused before anything was written


BAD_DATA = [
    # (argv, words)
    (lambda f, o: _fit(f, o, data="cls13.npz"), ["--data", "[1, 2, 3]", "class 0"]),
    (lambda f, o: _fit(f, o, "--test", str(f / "six.npz")), ["--test", "(6,)", "5 features"]),
    (lambda f, o: _fit(f, o, "--test", str(f / "missing.csv")), ["missing.csv"]),
    (lambda f, o: _fit(f, o, "--layer-sparsity", "0.5,0.5"), ["exactly one of"]),
    (lambda f, o: ["train", "--task", "regression", "--test", str(f / "reg.csv")],
     ["--test", "--data"]),
]


@pytest.mark.parametrize("make,words", BAD_DATA, ids=range(len(BAD_DATA)))
def test_bad_data_exits_2_with_one_line(files, tmp_path, capsys, make, words):
    code = main(make(files, tmp_path / "o"))
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_BAD_INPUT
    for word in words:
        assert word in line, (word, line)


def test_parser_errors_in_a_real_process_are_one_line_and_help_shows_usage(files):
    proc = subprocess.run([sys.executable, "-m", "l1sparse", "fit", "--lr", "0"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2
    assert _one_line(proc.stderr).startswith("l1sparse fit: error: argument --lr")
    assert "usage" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "l1sparse", "fit", "--help"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0 and proc.stdout.startswith("usage: l1sparse fit")
    for code, _ in EXIT_CODES:
        assert f"\n  {code} " in proc.stdout


def test_every_flag_of_every_command_has_help():
    parser = build_parser()
    for name, command in parser.commands.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_verbose_and_quiet_are_accepted_after_the_command():
    parser = build_parser()
    base = ["fit", "--data", "x.npz"]
    assert parser.parse_args([*base, "-v", "--quiet"]).verbose is True
    assert parser.parse_args(["-v", "--quiet", *base]).quiet is True
    assert parser.parse_args(["-v", *base]).verbose is True  # not reset by the command
    plain = parser.parse_args(base)
    assert plain.verbose is False and plain.quiet is False
    assert parser.parse_args(["inspect", "m.safetensors", "-v"]).verbose is True
    assert parser.parse_args(["--quiet", "reproduce", "--out", "x"]).quiet is True


def test_config_values_are_checked_like_flags(files, tmp_path, capsys):
    config = tmp_path / "fit.toml"
    config.write_text("lr = 0\n")
    code = main([*_fit(files, tmp_path / "o"), "--config", str(config)])
    assert code == 2 and "--lr" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- warnings


def test_a_batch_larger_than_the_data_is_warned_about(files, tmp_path, capsys):
    code = main(_fit(files, tmp_path / "o", "--batch-size", "1000", "--quiet"))
    err = capsys.readouterr().err
    assert code in (0, 3) and "Traceback" not in err
    warning = [line for line in err.splitlines() if "--batch-size 1000" in line]
    assert len(warning) == 1
    assert warning[0].startswith("l1sparse: warning:") and "40 training samples" in warning[0]


def test_test_labels_unseen_in_training_are_warned_about(files, tmp_path, capsys):
    code = main(_fit(files, tmp_path / "o", data="unseen.npz"))
    err = capsys.readouterr().err
    assert code in (0, 3)
    assert "Traceback" not in err
    warning = [line for line in err.splitlines() if "never occur" in line]
    assert len(warning) == 1 and "[5]" in warning[0]
    assert warning[0].startswith("l1sparse: warning: --data")


# --------------------------------------------------------------------------- output


def test_quiet_keeps_the_one_line_result_with_the_target_in_words(files, tmp_path, capsys):
    code = main(_fit(files, tmp_path / "o", "--quiet"))
    err = capsys.readouterr().err
    assert code in (0, 3) and "Traceback" not in err
    lines = err.strip().splitlines()
    # progress is hidden; the result line stays (warnings about the network may come with it)
    assert not any(line.startswith(("fit:", "resuming", "no checkpoint")) for line in lines)
    result_lines = [line for line in lines if line.startswith("target (")]
    assert len(result_lines) == 1
    assert result_lines[0].startswith("target (50 % zeros ± 10 pp)")
    assert str(tmp_path / "o") in result_lines[0]
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["target_words"] == "50 % zeros ± 10 pp"


def test_counts_are_integers_in_result_json(files, tmp_path, capsys):
    out = tmp_path / "nnz"
    code = main(["fit", "--data", str(files / "cls.npz"), "--task", "classification", *TINY,
                 "--target-nnz", "30", "--out", str(out), "--quiet"])
    assert code in (0, 3)
    result = json.loads((out / "result.json").read_text())
    assert result["target"]["value"] == 30 and isinstance(result["target"]["value"], int)
    assert isinstance(result["target"]["tol"], int)
    assert isinstance(result["attained"], int)
    assert all(isinstance(d, int) for d in result["distance_nnz"])
    assert "30 nonzeros" in result["target_words"]


# --------------------------------------------------------------------------- nothing overwritten


def test_fit_refuses_a_non_empty_out_and_force_overwrites(files, fitted, capsys):
    before = {p.name: p.read_bytes() for p in fitted.iterdir()}
    code = main(_fit(files, fitted, "--seed", "1"))
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_BAD_INPUT
    assert "not empty" in line and "--resume" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in fitted.iterdir()} == before  # untouched

    code = main(_fit(files, fitted, "--seed", "1", "--force", "--quiet"))
    assert code in (0, 3)
    result = json.loads((fitted / "result.json").read_text())
    assert result["settings"]["seed"] == 1


def test_a_non_empty_out_holding_other_files_is_refused_too(files, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = main(_fit(files, tmp_path))
    assert code == 2 and "notes.txt" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- checkpoints


class _Planted:
    """Pickles to a call that writes a marker file: what a crafted checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('the payload ran')",))


def test_a_crafted_checkpoint_is_refused_and_its_payload_does_not_run(files, tmp_path, capsys):
    # the payload is live: unpickled the old way, it writes its marker
    probe = tmp_path / "probe.pt"
    torch.save({"format": 2, "x": _Planted(tmp_path / "probe-ran")}, probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-ran").exists()

    out = tmp_path / "shared-run"
    out.mkdir()
    marker = tmp_path / "ran"
    torch.save({"format": 2, "fingerprint": {}, "state": _Planted(marker)},
               out / "checkpoint.pt")
    code = main(_fit(files, out, "--resume"))
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_BAD_INPUT
    assert "checkpoint" in line and "not loaded" in line and "could run code" in line
    assert not marker.exists()
    assert not (out / "result.json").exists()


def test_an_old_pickled_checkpoint_is_refused_with_one_line(files, tmp_path, capsys):
    from l1sparse.standardize import Standardization  # any of the library's dataclasses

    out = tmp_path / "old"
    out.mkdir()
    torch.save({"format": 1, "state": Standardization(torch.zeros(2), torch.ones(2))},
               out / "checkpoint.pt")
    code = main(_fit(files, out, "--resume"))
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "not loaded" in line and "remove it" in line


def test_checkpoint_round_trip_keeps_dataclasses_tuples_and_tensors(tmp_path):
    from l1sparse.standardize import Standardization

    state = Standardization(torch.arange(3.0), torch.ones(3), None, None)
    payload = {"fingerprint": {"hidden": [8], "seed": 0},
               "state": state, "best": (1.5, {"fc1": 0.1}, {0: torch.zeros(2)}),
               "generator": torch.Generator().manual_seed(3).get_state()}
    path = tmp_path / "checkpoint.pt"
    _save_checkpoint(path, payload)
    back = _read_checkpoint(path)
    assert back["format"] == 2 and back["fingerprint"] == payload["fingerprint"]
    assert isinstance(back["state"], Standardization)
    assert torch.equal(back["state"].x_mean, state.x_mean) and back["state"].y_mean is None
    assert isinstance(back["best"], tuple) and back["best"][:2] == (1.5, {"fc1": 0.1})
    assert torch.equal(back["best"][2][0], torch.zeros(2))
    assert torch.equal(back["generator"], payload["generator"])
    torch.load(path, weights_only=True)  # nothing but tensors and plain data inside


def test_a_foreign_object_is_not_written_into_a_checkpoint(tmp_path):
    from fractions import Fraction

    with pytest.raises(TypeError, match="Fraction"):
        _save_checkpoint(tmp_path / "c.pt", {"x": Fraction(1, 3)})


# --------------------------------------------------------------------------- inspect, export


@pytest.mark.parametrize("extra,words", [
    (["--data", "six.npz"], ["--data", "6 features", "takes 5", "trained on"]),
    (["--data", "reg.csv", "--task", "regression"], ["--task regression", "classification"]),
])
def test_inspect_with_the_wrong_data_is_one_line(files, fitted, capsys, extra, words):
    extra = [str(files / a) if a.endswith((".npz", ".csv")) else a for a in extra]
    code = main(["inspect", str(fitted), *extra])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    for word in words:
        assert word in line, (word, line)


def test_export_onto_a_directory_is_one_line_without_a_temporary_path(fitted, tmp_path, capsys):
    target = tmp_path / "exists"
    target.mkdir()
    code = main(["export", str(fitted), "--out", str(target)])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "is a directory" in line and ".tmp" not in line
    assert list(target.iterdir()) == []


def test_inspect_into_a_closed_pipe_ends_quietly(fitted):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as after `| head -0`
    try:
        proc = subprocess.run([sys.executable, "-m", "l1sparse", "inspect", str(fitted)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
                              env=_env())
    finally:
        os.close(write)
    assert proc.returncode == EXIT_PIPE_CLOSED
    assert proc.stderr == ""  # no "Broken pipe", no traceback


# --------------------------------------------------------------------------- --test, --standardize


def test_test_file_gives_a_test_metric(files, tmp_path):
    out = tmp_path / "o"
    code = main(_fit(files, out, "--test", str(files / "reg_test.csv"), "--quiet",
                     data="reg.csv", task="regression"))
    result = json.loads((out / "result.json").read_text())
    assert code in (0, 3) and result["test_metric"] is not None
    assert result["lambda_scale"] == "data as given" and result["standardized"] is None


def test_standardize_saves_a_model_that_predicts_on_raw_inputs(files, tmp_path, capsys):
    from l1sparse.data import load_file
    from l1sparse.export import load, read_metadata

    out = tmp_path / "std"
    config = tmp_path / "fit.toml"
    config.write_text(f'standardize = true\ntest = "{files / "reg_test.csv"}"\n')
    code = main([*_fit(files, out, "--quiet", data="reg.csv", task="regression"),
                 "--config", str(config)])
    assert code in (0, 3)
    result = json.loads((out / "result.json").read_text())
    assert result["standardized"] == {"features": True, "target": True}
    assert result["lambda_scale"] == "standardised data"
    model = load(out / "model.safetensors")
    raw = load_file(files / "reg_test.csv", task="regression")
    with torch.no_grad():
        mse = float((model(raw.X_train) - raw.y_train).pow(2).mean())
    assert mse == pytest.approx(result["test_metric"], rel=1e-4)  # raw scale, raw inputs
    assert result["test_metric"] < float(raw.y_train.var()) * 4  # not a standardised-scale fit
    assert read_metadata(out / "model.safetensors")["extra"]["standardize"]["folded"] is True
    assert sum(layer["nnz"] for layer in result["layers"]) == result["nnz"]
    from l1sparse.sparsity import sparsity

    assert sparsity(model).nnz == result["nnz"]  # folding kept every zero

    csr = tmp_path / "std.csr.safetensors"
    assert main(["export", str(out), "--out", str(csr)]) == 0
    torch.testing.assert_close(load(csr)(raw.X_train), model(raw.X_train))
    capsys.readouterr()
    assert main(["inspect", str(csr), "--data", str(files / "reg.csv")]) == 0
    assert "first-order conditions" in capsys.readouterr().out


def test_standardization_fold_and_unfold_are_inverse_and_keep_zeros():
    from l1sparse.models import mlp
    from l1sparse.standardize import Standardization

    g = torch.Generator().manual_seed(0)
    X = 30 * torch.randn(50, 4, generator=g) + 7
    y = 200 * torch.randn(50, 2, generator=g) - 5
    std = Standardization.from_data(X, y)
    net = mlp(4, [6], 2, seed=0).requires_grad_(False)
    net.fc1.weight[0, :2] = 0.0
    net.fc2.weight[1, 3] = 0.0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    expected = net(std.transform_X(X)).double() * std.y_scale + std.y_mean
    std.fold(net)
    torch.testing.assert_close(net(X).double(), expected, rtol=1e-5, atol=1e-3)
    assert torch.equal(net.fc1.weight == 0, before["fc1.weight"] == 0)
    assert torch.equal(net.fc2.weight == 0, before["fc2.weight"] == 0)
    std.unfold(net)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=1e-5, atol=1e-6)
    back = Standardization.from_metadata(std.as_metadata())
    torch.testing.assert_close(back.x_scale, std.x_scale)
    torch.testing.assert_close(back.y_mean, std.y_mean)


# --------------------------------------------------------------------------- targets, divergence


def test_layer_sparsity_by_name(files, tmp_path, capsys):
    out = tmp_path / "named"
    code = main(["fit", "--data", str(files / "cls.npz"), "--task", "classification", *TINY,
                 "--layer-sparsity", "fc2=0.5,fc1=0.8", "--out", str(out), "--quiet"])
    assert code in (0, 3), capsys.readouterr().err
    capsys.readouterr()
    result = json.loads((out / "result.json").read_text())
    assert result["target"]["value"] == [0.8, 0.5]  # in layer order, whatever the order given
    code = main(["fit", "--data", str(files / "cls.npz"), "--task", "classification", *TINY,
                 "--layer-sparsity", "fc1=0.8,fc9=0.5", "--out", str(tmp_path / "bad")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "--layer-sparsity" in line and "fc9" in line


def test_divergence_exits_4_with_a_hint(files, tmp_path, capsys):
    out = tmp_path / "diverged"
    code = main(["fit", "--data", str(files / "reg.csv"), "--task", "regression", *TINY,
                 "--target-sparsity", "0.5", "--optimizer", "sgd", "--lr", "1e30",
                 "--out", str(out), "--quiet"])
    line = _one_line(capsys.readouterr().err)
    assert code == 4
    assert "diverged" in line and "--lr" in line and "--standardize" in line
    assert not (out / "model.safetensors").exists()
