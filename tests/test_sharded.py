"""Sharded parameters (DTensor, FSDP2): counts and selections over shards with collectives,
the FSDP example under torchrun (2 gloo ranks), sharded checkpoints and resume after a kill."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l1sparse import rule, sharded
from l1sparse.scheduler import live_units

EXAMPLE = Path(__file__).parent.parent / "examples" / "fsdp_fully_shard.py"


# --------------------------------------------------------------------------- one process


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_largest_is_the_sorted_value_with_ties_zeros_and_negatives(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, generator=g, dtype=dtype)
    x[:300] = 0.0
    x[300:400] = x[400]  # ties
    x[401] = -0.0
    x[402:404] = torch.tensor([1e-300 if dtype == torch.float64 else 1e-38, -1e5])
    parts = list(x.split([1000, 0, 2000]))  # an empty part, as an empty shard
    ordered = x.sort(descending=True).values
    for k in (1, 2, 99, 350, 1500, 2999, 3000):
        assert sharded.kth_largest(parts, k) == float(ordered[k - 1])


def test_first_order_guess_and_exact_threshold_are_the_rules_on_the_concatenation():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(1000, generator=g)
    scores[:200] = 0.0
    parts = list(scores.split([300, 700]))
    for k in (0, 1, 7, 400, 799, 800, 900, 1000):
        assert sharded.first_order_guess(parts, k) == rule.first_order_guess(scores, k)
        assert sharded.exact_threshold(parts, k) == rule.exact_threshold(scores, k)
    assert sharded.first_order_guess([torch.zeros(5)], 2) == 0.0
    assert sharded.first_order_guess([], 2) == 0.0


def test_kth_largest_out_of_range_is_one_clear_error():
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]\. Got 3\."):
        sharded.kth_largest([torch.tensor([1.0, 2.0])], 3)


def test_counts_of_plain_tensors_are_the_schedulers():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 4, generator=g)
    w[1] = 0
    w[:, 2] = 0
    conv = torch.randn(5, 3, 2, 2, generator=g)
    conv[:, 1] = 0
    got = sharded.nnz_and_live([[w], [conv, w]])
    assert got == [(int(w.count_nonzero()), *live_units(w)),
                   (int(conv.count_nonzero() + w.count_nonzero()), *live_units(conv))]
    assert not sharded.any_dtensor([w, conv])
    sharded.check_placements("fc1", w)  # a plain tensor: nothing to refuse


# --------------------------------------------------------------------------- two gloo ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_two_ranks(rank, world, port):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    from l1sparse import ProxAdam, ProxSGD, SparsityScheduler
    from l1sparse.penalty import L1_WEIGHT, ReweightedL1Penalty

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        full = torch.randn(7, 5, generator=g)  # 7 rows on 2 ranks: uneven shards (4 + 3)
        full[2] = 0.0
        full[:, 3] = 0.0
        full[full.abs() < 0.3] = 0.0
        conv = torch.randn(5, 3, 2, 2, generator=g)
        conv[1] = 0.0
        conv[:, 2] = 0.0
        expected = [(int(t.count_nonzero()), *live_units(t)) for t in (full, conv)]
        values = torch.cat([full.flatten(), conv.flatten()]).abs()
        ordered = values.sort(descending=True).values
        mesh = init_device_mesh("cpu", (world,))
        mesh2 = init_device_mesh("cpu", (world, 1))  # HSDP-like: replicas x shards
        layouts = [(mesh, [Shard(0)]), (mesh, [Shard(1)]), (mesh2, [Replicate(), Shard(0)])]
        for m, placements in layouts:
            dts = [distribute_tensor(t, m, placements) for t in (full, conv)]
            assert sharded.any_dtensor(dts)
            assert sharded.nnz_and_live([[d] for d in dts]) == expected, placements
            parts = [sharded.local(d).abs().flatten() for d in dts if sharded.contributes(d)]
            for k in (1, 33, values.numel()):
                assert sharded.kth_largest(parts, k) == float(ordered[k - 1]), (placements, k)
            assert sharded.first_order_guess(parts, 30) == rule.first_order_guess(values, 30)
            assert sharded.exact_threshold(parts, 60) == rule.exact_threshold(values, 60)
        # an unsupported placement: one line naming the parameter and the placement
        pending = DTensor.from_local(torch.ones(2, 2), mesh, [Partial()])
        with pytest.raises(ValueError, match=r"'fc1\.weight' has placement Partial"):
            sharded.check_placements("fc1.weight", pending)
        # the final projection lands on an exact count over the shards
        w = distribute_tensor(torch.randn(9, 6, generator=g), mesh, [Shard(0)])
        assert sharded.drop_smallest([w], [None], 20) == 54 - 20
        assert sharded.nnz_and_live([[w]])[0][0] == 20
        # penalty weights c_i on the shard: those of the full weight, sharded as the weight
        c = ReweightedL1Penalty().weights(distribute_tensor(full, mesh, [Shard(0)]))
        assert isinstance(c, DTensor) and tuple(c.placements) == (Shard(0),)
        torch.testing.assert_close(c.full_tensor(), ReweightedL1Penalty().weights(full))
        # a proximal step on a sharded weight is the step on the full weight, shard by shard
        # (SGD's threshold, Adam's metric; plain and weighted by c_i)
        grad = torch.randn(7, 5, generator=g)
        for make, weighted in ((lambda q: ProxSGD(q, lr=0.1, momentum=0.9), False),
                               (lambda q: ProxSGD(q, lr=0.1, momentum=0.9), True),
                               (lambda q: ProxAdam(q, lr=0.1), True)):
            plain = torch.nn.Parameter(full.clone())
            dt = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
            for p, gr in ((plain, grad), (dt, distribute_tensor(grad, mesh, [Shard(0)]))):
                opt = make([{"params": [p], "name": "w", "l1": 0.5}])
                if weighted:
                    opt.state[p][L1_WEIGHT] = ReweightedL1Penalty().weights(p)
                for _ in range(3):
                    p.grad = gr.clone()
                    opt.step()
            torch.testing.assert_close(dt.full_tensor(), plain.detach(), rtol=0, atol=1e-6)
            assert int(dt.full_tensor().count_nonzero()) == int(plain.count_nonzero())
        # the scheduler refuses a parameter it cannot count, naming it and the placement
        bad = torch.nn.Parameter(DTensor.from_local(torch.ones(3, 3), mesh, [Partial()]))
        opt = ProxSGD([{"params": [bad], "name": "enc.weight", "l1": 0.0}], lr=0.1)
        with pytest.raises(ValueError, match=r"'enc\.weight' has placement Partial"):
            SparsityScheduler(opt, zero_fraction=0.5, total_steps=10, n_samples=10)
    finally:
        dist.destroy_process_group()


def test_counts_selections_prox_and_penalty_weights_over_two_gloo_ranks():
    torch.multiprocessing.spawn(_on_two_ranks, args=(2, _free_port()), nprocs=2, join=True)


# --------------------------------------------------------------------------- the FSDP example


def _torchrun(*args, ok=True, ranks=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", str(ranks), str(EXAMPLE), "--steps", "150",
                           "--ckpt-every", "40", *map(str, args)],
                          capture_output=True, text=True, timeout=240, env=env)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["rank"]] = r
    return proc, results


def _complete(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if (p / ".metadata").exists())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    _, results = _torchrun("--ckpt", tmp / "ckpt", "--save", tmp / "model.safetensors")
    return tmp, results


def test_fsdp_example_reaches_its_target_with_the_same_decisions_on_both_ranks(uninterrupted):
    from l1sparse.export import load

    tmp, results = uninterrupted
    assert sorted(results) == [0, 1]
    a, b = results[0], results[1]
    assert a["met"] and b["met"] and a["world"] == 2
    assert a["nnz"] == b["nnz"] and a["lambdas"] == b["lambdas"]
    total = 16 * 64 + 64 * 64 + 64 * 4
    assert abs(1 - sum(a["nnz"].values()) / total - 0.9) <= 0.005
    assert a["local_shard"] == [32, 16]  # each rank holds half of fc1
    # save_model gathered the full weights to rank 0, which alone wrote them
    net = load(tmp / "model.safetensors")
    assert {n: int(getattr(net, n).weight.count_nonzero()) for n in a["nnz"]} == a["nnz"]
    assert _complete(tmp / "ckpt") == ["step_000040", "step_000080", "step_000120"]


def test_resume_after_a_kill_ends_with_the_same_count_and_lambda(uninterrupted, tmp_path):
    _, whole = uninterrupted
    killed, partial = _torchrun("--ckpt", tmp_path, "--kill-at", 100, ok=False)
    assert killed.returncode != 0 and not partial, killed.stderr[-2000:]
    # complete checkpoints have DCP's .metadata (rank 1 may have begun step_000120)
    assert _complete(tmp_path) == ["step_000040", "step_000080"]
    _, resumed = _torchrun("--ckpt", tmp_path)
    for rank in (0, 1):
        assert resumed[rank]["resumed_from"] == "step_000080"
        assert resumed[rank]["nnz"] == whole[rank]["nnz"]
        assert resumed[rank]["lambdas"] == whole[rank]["lambdas"]
        assert resumed[rank]["met"]


def test_a_checkpoint_of_two_ranks_resumes_on_one_resharded_by_dcp(uninterrupted, tmp_path):
    import shutil

    tmp, _ = uninterrupted
    shutil.copytree(tmp / "ckpt" / "step_000120", tmp_path / "step_000120")
    proc, results = _torchrun("--ckpt", tmp_path, ranks=1)
    assert "resharded from 2 to 1 ranks" in proc.stdout
    assert results[0]["resumed_from"] == "step_000120" and results[0]["world"] == 1
    assert results[0]["local_shard"] == [64, 16] and results[0]["met"]
