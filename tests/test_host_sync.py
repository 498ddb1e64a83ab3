"""Host synchronisations of the SparsityScheduler, the proximal steps and the reweighting.

A read of a tensor's value on the host (``.item()``, ``.tolist()``, ``bool()``, ``float()``,
``int()``, ``__index__``, ``format``, ``.numpy()``) stalls a GPU pipeline until the device has
caught up. The rule (issue 25): at most one such read per ``check_every`` steps, none on the
other steps. On the CPU nothing stalls, so these tests count the reads instead: a shim wraps
those ``torch.Tensor`` methods while ``optimizer.step()`` (which runs the proximal step and the
scheduler through the step hook) and ``scheduler.step()`` run, and attributes each read to the
innermost line of l1sparse on the stack. Reads made by torch's own optimizers outside any
l1sparse frame (``torch.optim.Adam`` reads its CPU step counter, which is no device sync) are
not ours and not counted. With a CUDA device, the last test runs the non-check steps under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import contextlib
import os
import traceback

import pytest
import torch

import l1sparse
from l1sparse import param_groups
from l1sparse.models import mlp, resnet_small
from l1sparse.prox import ProxAdam, ProxSGD
from l1sparse.scheduler import SparsityScheduler

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__format__",
         "numpy")
SRC = os.path.dirname(l1sparse.__file__)
STEPS, CHECK = 120, 5


class SyncCounter:
    """Host reads per step, each as ``(method, "module.py:line")`` of the l1sparse caller."""

    def __init__(self) -> None:
        self.active = False
        self.calls: list[tuple[str, str]] = []

    def record(self, method: str) -> None:
        for frame in reversed(traceback.extract_stack()[:-2]):
            if frame.filename.startswith(SRC):
                self.calls.append((method, f"{os.path.relpath(frame.filename, SRC)}:"
                                           f"{frame.lineno}"))
                return

    @contextlib.contextmanager
    def installed(self):
        saved = {m: getattr(torch.Tensor, m) for m in READS}

        def wrap(method, original):
            def counted(self_, *args, **kwargs):
                if counter.active:
                    counter.active = False  # reads inside a read are one read
                    try:
                        counter.record(method)
                    finally:
                        counter.active = True
                return original(self_, *args, **kwargs)
            return counted

        counter = self
        for m, fn in saved.items():
            setattr(torch.Tensor, m, wrap(m, fn))
        try:
            yield self
        finally:
            for m, fn in saved.items():
                setattr(torch.Tensor, m, fn)


def _optimizer(kind: str, net):
    if kind == "ProxSGD":
        return ProxSGD(param_groups(net), lr=0.1, momentum=0.9), {}
    if kind == "ProxAdam":
        return ProxAdam(param_groups(net), lr=1e-2), {}
    if kind == "SGD":  # the proximal step rides on the step hook (threshold with momentum)
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), {"model": net}
    if kind == "AdamW":  # the Adam-family metric
        return torch.optim.AdamW(net.parameters(), lr=1e-2), {"model": net}
    if kind == "RMSprop":  # the Euclidean proximal step
        return torch.optim.RMSprop(net.parameters(), lr=1e-3), {"model": net}
    raise AssertionError(kind)


def run_counted(kind: str, penalty: str, *, model: str = "mlp", device: str = "cpu",
                sync_debug: bool = False):
    """Train ``STEPS`` steps with a scheduler checking every ``CHECK`` steps; return the host
    reads per step (1-based) and the scheduler."""
    g = torch.Generator().manual_seed(0)
    if model == "mlp":
        net = mlp(20, [32, 16], 3, seed=0)
        X = torch.randn(256, 20, generator=g)
        y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    else:
        net = resnet_small(width=2, blocks=(1, 1, 1), seed=0)
        X = torch.randn(256, 784, generator=g)
        y = (X[:, :392].sum(1) > 0).long()
    net, X, y = net.to(device), X.to(device), y.to(device)
    opt, kw = _optimizer(kind, net)
    sched = SparsityScheduler(opt, zero_fraction=0.9, total_steps=STEPS, n_samples=256,
                              penalty=penalty, check_every=CHECK, **kw)
    batches = torch.randint(0, 256, (STEPS, 32), generator=g).to(device)
    per_step: dict[int, list] = {}
    counter = SyncCounter()
    with counter.installed():
        for t in range(1, STEPS + 1):
            idx = batches[t - 1]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
            quiet = sync_debug and not is_check(t)
            if quiet:
                torch.cuda.set_sync_debug_mode("error")
            counter.calls, counter.active = [], True
            try:
                opt.step()
                sched.step()
            finally:
                counter.active = False
                if quiet:
                    torch.cuda.set_sync_debug_mode("default")
            per_step[t] = list(counter.calls)
    return per_step, sched


def is_check(t: int) -> bool:
    """The steps on which the scheduler counts: the first, every CHECK-th, the last."""
    return t == 1 or t % CHECK == 0 or t == STEPS


CASES = [("ProxSGD", "reweighted"), ("ProxSGD", "l1"), ("ProxAdam", "reweighted"),
         ("SGD", "reweighted"), ("AdamW", "reweighted"), ("RMSprop", "l1")]


@pytest.fixture(scope="module")
def runs():
    return {case: run_counted(*case) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_no_host_read_between_the_counts(runs, case):
    per_step, sched = runs[case]
    assert sched.check_every == CHECK and sched.met  # the run did its job
    off = {t: v for t, v in per_step.items() if not is_check(t) and v}
    assert off == {}, f"host reads on steps that are not counts: {off}"


@pytest.mark.parametrize("case", CASES)
def test_one_host_read_per_count_while_steering(runs, case):
    """Every count after the first one (where λ gets its first value) and before the final
    projection is exactly one read, the count's ``.tolist()``."""
    per_step, sched = runs[case]
    projected = {p["step"] for p in sched.projections}
    for t in range(2, STEPS):
        if t in projected:  # a projection at the hold point: λ no longer steers
            continue
        assert len(per_step[t]) == (1 if is_check(t) else 0), (t, per_step[t])
        if per_step[t]:
            assert per_step[t][0] == ("tolist", per_step[CHECK][0][1])  # the one count


def test_one_host_read_per_count_on_a_residual_cnn():
    per_step, sched = run_counted("ProxSGD", "reweighted", model="resnet")
    assert sched.last_step == STEPS
    projected = {p["step"] for p in sched.projections}
    assert all(len(per_step[t]) == (1 if is_check(t) else 0) for t in range(2, STEPS)
               if t not in projected)


@pytest.mark.parametrize("case", CASES)
def test_the_first_lambda_is_read_with_the_count(runs, case):
    """Step 1 sets the first λ from the gradient: its first-order guess is computed on the
    device and read in the same ``.tolist()`` as the count, so step 1 is one read too."""
    per_step, sched = runs[case]
    assert any(h["step"] > 1 for h in sched.history)
    assert [m for m, _ in per_step[1]] == ["tolist"], per_step[1]


@pytest.mark.parametrize("case", [("ProxSGD", "reweighted"), ("ProxSGD", "l1")])
def test_one_host_read_per_count_over_the_whole_run_but_the_final_projection(runs, case):
    """The rule over the whole run: one read per count, none in between. The exemption, stated
    in the scheduler's docstring, is a projection (at the hold point and at the last step, each
    once per run and only when the count is outside the tolerance there), on a count's step."""
    per_step, sched = runs[case]
    projected = {p["step"] for p in sched.projections}
    assert all(is_check(t) for t in projected)
    reads = {t: len(v) for t, v in per_step.items() if t < STEPS and t not in projected}
    assert all(n == (1 if is_check(t) else 0) for t, n in reads.items()), reads
    if sched.final is None:
        assert len(per_step[STEPS]) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", [("ProxSGD", "reweighted"), ("ProxAdam", "reweighted"),
                                  ("SGD", "reweighted")])
def test_no_device_sync_between_the_counts_on_cuda(case):
    per_step, sched = run_counted(*case, device="cuda", sync_debug=True)
    assert sched.last_step == STEPS
    assert all(not v for t, v in per_step.items() if not is_check(t))
