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
    assert gpu.converged and cpu.converged
    # the same schedule; the controller amplifies float differences of the kernels a little
    assert gpu.outer_iterations == cpu.outer_iterations
    assert gpu.lam == pytest.approx(cpu.lam, rel=0.1)


@needs_cuda
def test_scheduler_with_a_grad_scaler_on_cuda_ignores_the_steps_it_skips():
    from l1sparse import ProxSGD, SparsityScheduler, param_groups

    X, y = (t.cuda() for t in _problem())
    net = mlp(20, [64, 32], 4, seed=0).cuda()
    opt = ProxSGD(param_groups(net), lr=0.05, momentum=0.9)
    steps = 600
    sched = SparsityScheduler(opt, zero_fraction=0.9, total_steps=steps, n_samples=len(X))
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 24)  # overflows at first: skips
    g = torch.Generator().manual_seed(0)
    skipped = 0
    while sched.last_step < steps:
        idx = torch.randint(0, len(X), (64,), generator=g).cuda()
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # the scheduler reads unscaled gradients
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped += scaler.get_scale() < before
        sched.step()
    assert skipped > 0 and sched.skipped_steps == skipped
    assert sched.met


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--task", "regression", "--lam", "1", "--epochs", "1",
                 "--device", "cuda"])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err
