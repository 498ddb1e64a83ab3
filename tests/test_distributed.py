"""Data-parallel `fit` under torchrun (gloo, 2 processes) agrees with one process."""

import json
import os
import subprocess
import sys

import pytest
import torch

from l1sparse.export import load


def _run(launcher, args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "L1SPARSE_THREADS": "1"}
    proc = subprocess.run([sys.executable, *launcher, "-m", "l1sparse", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("mode", ["warm", "retrain", "paper"])
def test_two_ranks_match_one_process(cls_file, tmp_path, mode):
    flags = ["fit", "--data", str(cls_file), "--task", "classification", "--hidden", "32",
             "--target-sparsity", "0.8", "--epochs", "4", "--optimizer", "adam", "--lr", "3e-3", "--batch-size", "64",
             "--mode", mode, "--quiet"]
    _run([], [*flags, "--out", str(tmp_path / "single")])
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
         [*flags, "--out", str(tmp_path / "ddp")])
    one = json.loads((tmp_path / "single" / "result.json").read_text())
    two = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["lambda"] == pytest.approx(one["lambda"], rel=1e-5)
    assert [l["nnz"] for l in two["layers"]] == [l["nnz"] for l in one["layers"]]
    assert two["outer_iterations"] == one["outer_iterations"]
    a, b = load(tmp_path / "single" / "model.safetensors"), load(tmp_path / "ddp" / "model.safetensors")
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-4, msg=name)
    # only rank 0 wrote: one result, no stray temporary files
    weighted = ["penalty_weights.safetensors"] if mode == "warm" else []  # reweighted l1
    assert sorted(f.name for f in (tmp_path / "ddp").iterdir()) == [
        "checkpoint.pt", "history.csv", "model.safetensors", *weighted, "result.json"]
