"""The λ that `fit --mode retrain` reports is reusable: `train --lam λ` with the same settings
and seed reproduces the count (the paper's scheme trains every outer iteration from the same
start, so λ and the returned model belong together)."""

import json

import pytest

from l1sparse.cli import main


def _nnz_from_table(out: str) -> int:
    line = next(ln for ln in out.splitlines() if ln.startswith("all"))
    return int(line.split()[1])


@pytest.mark.parametrize("batch", ["32", "full"])
def test_train_at_the_retrain_lambda_reproduces_the_count_of_fit(cls_file, tmp_path, capsys,
                                                                   batch):
    common = ["--data", str(cls_file), "--task", "classification", "--hidden", "16",
              "--epochs", "6" if batch != "full" else "200", "--batch-size", batch,
              "--seed", "3"]
    code = main(["fit", *common, "--target-sparsity", "0.8", "--tol", "0.02",
                 "--mode", "retrain", "--quiet", "--out", str(tmp_path / "fit")])
    result = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert code in (0, 3) and result["converged"], result
    capsys.readouterr()
    assert main(["train", *common, "--lam", repr(result["lambda"])]) == 0
    nnz = _nnz_from_table(capsys.readouterr().out)
    tol = result["target"]["tol_weights"][0]
    assert abs(nnz - result["nnz"]) <= tol
    assert nnz == result["nnz"]  # the same training, not merely the same neighbourhood
    assert "warm" not in result["lambda_meaning"]
