"""The Lightning callback: a tiny LightningModule (MLP classifier on a synthetic teacher task)
with its own AdamW and cosine lr schedule from configure_optimizers, on CPU."""

from __future__ import annotations

import csv
import importlib
import sys

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from l1sparse.integrations.lightning import SparsityCallback  # noqa: E402

N, D, H, C = 1024, 20, 64, 4
STEPS = 300
TENSORS = D * H + H * H + H * C


def data(seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g)
    teacher = torch.randn(D, C, generator=g) * (torch.rand(D, C, generator=g) < 0.3)
    return torch.utils.data.TensorDataset(X, (X @ teacher).argmax(1))


class Classifier(pl.LightningModule):
    def __init__(self, seed: int = 0, lr: float = 3e-3):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                 nn.Linear(H, C))
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cos, "interval": "step"}}


def loader(seed: int = 0, batch: int = 32):
    return torch.utils.data.DataLoader(data(), batch_size=batch, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def trainer(tmp_path, cb, *, max_steps=STEPS, **kw):
    base = dict(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=False, callbacks=[cb], default_root_dir=str(tmp_path),
                log_every_n_steps=10)
    base.update(kw)
    return pl.Trainer(**base)


def accuracy(module) -> float:
    ds = data()
    with torch.no_grad():
        return (module.net(ds.tensors[0]).argmax(1) == ds.tensors[1]).float().mean().item()


def test_reaches_target_logs_through_the_logger(tmp_path):
    pl.seed_everything(0, verbose=False)
    module, cb = Classifier(), SparsityCallback(zero_fraction=0.8)
    logger = CSVLogger(str(tmp_path), name="run")
    trainer(tmp_path, cb, logger=logger).fit(module, loader())
    sched = cb.scheduler
    assert sched.met and sched.last_step == STEPS == sched.total_steps
    assert sched.tensors == ["net.0", "net.2", "net.4"]
    zeros = sum((m.weight == 0).sum().item() for m in module.net if isinstance(m, nn.Linear))
    assert zeros / TENSORS == pytest.approx(0.8, abs=0.005)
    assert accuracy(module) > 0.85
    # λ was steered during the run, and the count tracked the schedule
    hist = sched.history
    during = [max(h["lambdas"].values()) for h in hist if h["step"] <= 0.7 * STEPS]
    assert sum(v > 0 for v in during) >= 0.8 * len(during)
    for h in hist:
        if 0.2 * STEPS <= h["step"] <= 0.85 * STEPS:
            zero = 1.0 - sum(h["nnz"].values()) / TENSORS
            assert abs(zero - h["scheduled_zero_fraction"][0]) < 0.15, h
    # the module's logger got the values (N = the dataset's length)
    logger.finalize("success")
    with open(logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("l1sparse/nnz")]
    assert len(rows) >= STEPS // 10 - 1
    assert float(rows[-1]["l1sparse/met"]) == 1.0
    assert float(rows[-1]["l1sparse/lambda"]) == pytest.approx(sched.lam, rel=1e-5)
    assert sched.n_samples == N


def test_accumulation_counts_optimizer_steps(tmp_path):
    pl.seed_everything(1, verbose=False)
    cb = SparsityCallback(zero_fraction=0.7)
    t = trainer(tmp_path, cb, max_steps=100, accumulate_grad_batches=2)
    t.fit(Classifier(1), loader(batch=16))
    assert t.global_step == 100 == cb.scheduler.last_step
    assert cb.scheduler.met


def test_resume_from_checkpoint_reaches_the_same_count(tmp_path):
    target = 1000

    def run(cb, root, ckpt_path=None):
        pl.seed_everything(2, verbose=False)
        module = Classifier(2)
        every = ModelCheckpoint(dirpath=str(root), every_n_train_steps=160, save_top_k=-1)
        t = trainer(root, cb, max_steps=STEPS, enable_checkpointing=True,
                    callbacks=[cb, every])
        t.fit(module, loader(2), ckpt_path=ckpt_path)
        return module

    full = SparsityCallback(nnz=target)
    run(full, tmp_path / "a")
    ckpt = next((tmp_path / "a").glob("*step=160*.ckpt"))
    saved = torch.load(ckpt, weights_only=True)["callbacks"]["SparsityCallback"]
    assert saved["scheduler"]["last_step"] == 160

    resumed = SparsityCallback(nnz=target)
    run(resumed, tmp_path / "b", ckpt_path=str(ckpt))
    a, b = full.scheduler, resumed.scheduler
    assert a.last_step == b.last_step == STEPS
    assert a.met and b.met
    assert sum(a.nnz.values()) == sum(b.nnz.values()) == target
    assert [h["step"] for h in b.history] == [h["step"] for h in a.history]


def test_unknown_length_asks_for_total_steps(tmp_path):
    cb = SparsityCallback(zero_fraction=0.5)
    t = trainer(tmp_path, cb, max_steps=-1, max_epochs=-1)
    with pytest.raises(ValueError, match=r"give SparsityCallback\(total_steps=\.\.\.\)"):
        t.fit(Classifier(), loader())


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one target"),
    ({"nnz": 10, "layer_nnz": [1, 2, 3]}, "exactly one target"),
    ({"zero_fraction": 0.5, "lr": 1}, "does not take"),
    ({"zero_fraction": 0.5, "total_steps": 1.5}, "'total_steps' parameter must be a positive"),
])
def test_bad_keywords(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsityCallback(**kwargs)


def test_missing_extra_names_the_pip_command(monkeypatch):
    for name in [m for m in sys.modules if m == "lightning" or m.startswith("lightning.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "l1sparse.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match=r"pip install l1sparse\[lightning\]"):
        importlib.import_module("l1sparse.integrations.lightning")
