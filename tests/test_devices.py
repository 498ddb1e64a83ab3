"""Device placement: CPU always; CUDA where present (skipped cleanly elsewhere)."""

import pytest
import torch

from l1sparse.cli import main
from l1sparse.models import mlp
from l1sparse.select import fit_sparse

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(800, 20, generator=g)
    y = (X @ torch.randn(20, 4, generator=g)).argmax(1)
    return X, y


def _fit(device):
    X, y = _problem()
    net = mlp(20, [64, 32], 4, seed=0)
    result = fit_sparse(net, X, y, task="classification", zero_fraction=0.9, tol=0.01,
                        epochs=10, optimizer="adam", lr=3e-3, batch_size=64, device=device)
    return net, result


def test_explicit_cpu_device():
    net, result = _fit("cpu")
    assert result.converged and next(net.parameters()).device.type == "cpu"


@needs_cuda
def test_cuda_run_matches_cpu_within_float_tolerance():
    cpu_net, cpu = _fit("cpu")
    gpu_net, gpu = _fit("cuda")
    assert next(gpu_net.parameters()).device.type == "cuda"
    assert gpu.converged
    # same λ path up to float differences of the kernels
    assert gpu.outer_iterations == cpu.outer_iterations
    assert gpu.lam == pytest.approx(cpu.lam, rel=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--task", "regression", "--lam", "1", "--epochs", "1",
                 "--device", "cuda"])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err
