"""The Hugging Face Trainer callback: a tiny GPT-2 built from a config (random weights, no
download) on the source text of a standard-library module, with a byte tokenizer written
here; the Trainer's own AdamW and linear lr schedule."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from l1sparse.integrations.huggingface import (  # noqa: E402
    STATE_KEY,
    SparsityCallback,
    infer_n_samples,
)

# the default set leaves the embeddings out, and says so once per scheduler
pytestmark = pytest.mark.filterwarnings("ignore:l1sparse leaves these trainable tensors")

SEQ = 32
N_SEQ = 256
STEPS = 600
TARGET = 0.8
TENSORS = 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)  # c_attn, c_proj, c_fc, mlp.c_proj


def byte_tokens(text: bytes) -> torch.Tensor:
    """The tokenizer: one token per byte (vocabulary 256)."""
    return torch.tensor(list(text), dtype=torch.long)


def dataset(n: int = N_SEQ) -> list[dict]:
    ids = byte_tokens(open(textwrap.__file__, "rb").read())
    assert len(ids) >= n * SEQ
    return [{"input_ids": ids[i * SEQ:(i + 1) * SEQ], "labels": ids[i * SEQ:(i + 1) * SEQ]}
            for i in range(n)]


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=256, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def trainer_args(out, **kw) -> TrainingArguments:
    base = dict(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=16,
                learning_rate=3e-3, logging_steps=100, save_strategy="no", report_to="none",
                disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0)
    base.update(kw)
    return TrainingArguments(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One Trainer run to 80 % zeros, shared by the tests that read it."""
    model = tiny_gpt2()
    cb = SparsityCallback(zero_fraction=TARGET)
    trainer = Trainer(model=model, args=trainer_args(tmp_path_factory.mktemp("hf")),
                      train_dataset=dataset(), callbacks=[cb])
    out = trainer.train()
    return model, cb, trainer, out


def test_reaches_target_with_the_trainers_optimizer(run):
    model, cb, trainer, out = run
    sched = cb.scheduler
    assert sched.met
    assert sched.last_step == trainer.state.global_step == STEPS
    # GPT-2's Conv1D weights are in the default set; the tied embedding/head is not
    chosen = set(sched.tensors)
    assert "transformer.h.0.attn.c_attn" in chosen and "transformer.h.1.mlp.c_proj" in chosen
    assert not any("wte" in n or "wpe" in n or "ln_" in n for n in chosen)
    zeros = sum((p == 0).sum().item() for n, p in model.named_parameters()
                if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")))
    assert zeros / TENSORS == pytest.approx(TARGET, abs=0.005)
    # the model still learned: the loss fell well below a uniform guess over bytes (ln 256)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.7 * torch.log(torch.tensor(256.0)).item()


def test_lambda_moved_and_count_followed_the_schedule(run):
    """The trap: a callback stepping after zero_grad leaves λ at 0 and meets the count by one
    cut at the end. Here λ is positive from early on and the count tracks the schedule."""
    _, cb, _, _ = run
    hist = cb.scheduler.history
    assert len(hist) >= 10
    lams = [h["lambdas"] for h in hist]
    during = [max(v.values()) for v, h in zip(lams, hist) if h["step"] <= 0.7 * STEPS]
    assert sum(v > 0 for v in during) >= 0.8 * len(during)
    assert len({round(v, 12) for v in during}) > 3  # λ was steered, not set once
    # the count followed the schedule: half way to the target by mid-run, then close to it
    mid = min(hist, key=lambda h: abs(h["step"] - STEPS // 2))
    assert 1.0 - sum(mid["nnz"].values()) / TENSORS > 0.5 * TARGET
    for h in hist:
        if 0.35 * STEPS <= h["step"] <= 0.85 * STEPS:
            zero = 1.0 - sum(h["nnz"].values()) / TENSORS
            assert abs(zero - h["scheduled_zero_fraction"][0]) < 0.1, h
    # the end was not one projection: the final cut (if any) removed a few weights only
    final = cb.scheduler.final
    assert final is None or final["removed"] + final["revived"] < 0.02 * TENSORS


def test_logs_carry_lambda_count_and_met(run):
    _, cb, trainer, _ = run
    logged = [h for h in trainer.state.log_history if "l1sparse/nnz" in h]
    assert len(logged) >= STEPS // 100
    last = logged[-1]
    assert last["l1sparse/met"] == 1.0
    assert last["l1sparse/lambda"] == pytest.approx(cb.scheduler.lam)
    assert last["l1sparse/zero_fraction"] == pytest.approx(TARGET, abs=0.005)
    # N: 256 sequences x 31 predicted bytes (a causal LM predicts from the second position)
    assert cb.scheduler.n_samples == N_SEQ * (SEQ - 1)
    assert [h["l1sparse/lambda"] > 0 for h in logged[:3]] == [True] * 3


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    cb = SparsityCallback(zero_fraction=0.7)
    trainer = Trainer(model=tiny_gpt2(1), args=trainer_args(tmp_path, max_steps=150,
                                                             gradient_accumulation_steps=2,
                                                             per_device_train_batch_size=8),
                      train_dataset=dataset(), callbacks=[cb])
    trainer.train()
    assert trainer.state.global_step == 150
    assert cb.scheduler.last_step == 150  # one step per optimizer step, not per batch
    assert cb.scheduler.met


def test_resume_from_checkpoint_reaches_the_same_count(tmp_path):
    target = 5000

    def make(out, cb):
        return Trainer(model=tiny_gpt2(2), args=trainer_args(out, max_steps=200, save_steps=100,
                                                               save_strategy="steps"),
                       train_dataset=dataset(), callbacks=[cb])

    full = SparsityCallback(nnz=target)
    make(tmp_path / "a", full).train()
    ckpt = tmp_path / "a" / "checkpoint-100"
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True)["param_groups"][0][STATE_KEY]
    assert saved["last_step"] == 100

    resumed = SparsityCallback(nnz=target)
    make(tmp_path / "b", resumed).train(resume_from_checkpoint=str(ckpt))
    a, b = full.scheduler, resumed.scheduler
    assert b.last_step == a.last_step == 200
    assert b.met and a.met
    assert sum(b.nnz.values()) == sum(a.nnz.values()) == target
    # the history before the checkpoint came back with the state
    assert [h["step"] for h in b.history] == [h["step"] for h in a.history]


def test_iterable_dataset_without_length(tmp_path):
    """max_steps known, N unknown: the schedule runs, λ is not logged (no summed scale)."""
    rows = dataset(64)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            while True:
                yield from rows

    cb = SparsityCallback(zero_fraction=0.5)
    trainer = Trainer(model=tiny_gpt2(3), args=trainer_args(tmp_path, max_steps=60,
                                                             logging_steps=20),
                      train_dataset=Stream(), callbacks=[cb])
    trainer.train()
    assert cb.scheduler.last_step == 60
    logged = [h for h in trainer.state.log_history if "l1sparse/nnz" in h]
    assert logged and not any("l1sparse/lambda" in h for h in logged)


def test_unknown_step_count_asks_for_total_steps(tmp_path):
    cb = SparsityCallback(zero_fraction=0.5)
    state = TrainerState()  # max_steps 0: the Trainer did not say
    with pytest.raises(ValueError, match=r"give SparsityCallback\(total_steps=\.\.\.\)"):
        cb.on_train_begin(trainer_args(tmp_path), state, TrainerControl(),
                          model=tiny_gpt2(), optimizer=torch.optim.AdamW(tiny_gpt2().parameters()))


def test_resume_without_scheduler_state_says_so(tmp_path):
    model = tiny_gpt2()
    state = TrainerState(max_steps=100, global_step=50)  # a checkpoint of another run
    with pytest.raises(ValueError, match="holds no l1sparse scheduler state"):
        SparsityCallback(zero_fraction=0.5).on_train_begin(
            trainer_args(tmp_path), state, TrainerControl(), model=model,
            optimizer=torch.optim.AdamW(model.parameters()))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one target"),
    ({"zero_fraction": 0.5, "nnz": 10}, "exactly one target"),
    ({"zero_fraction": 0.5, "not_a_keyword": 1}, "does not take"),
    ({"zero_fraction": 0.5, "total_steps": 0}, "'total_steps' parameter must be a positive"),
    ({"zero_fraction": 0.5, "n_samples": -3}, "'n_samples' parameter must be a positive"),
])
def test_bad_keywords(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsityCallback(**kwargs)


def test_n_samples_rules():
    gpt = tiny_gpt2()
    seq = [{"input_ids": torch.arange(8), "labels": torch.arange(8)}] * 5
    assert infer_n_samples(seq, gpt)[0] == 5 * 7  # causal LM: the first label is not predicted
    assert infer_n_samples(seq, None)[0] == 5 * 8
    padded = [{"labels": torch.tensor([1, 2, -100, -100])}] * 4
    assert infer_n_samples(padded, None)[0] == 4 * 2
    no_labels = [{"input_ids": torch.arange(10)}] * 3
    assert infer_n_samples(no_labels, gpt)[0] == 3 * 9  # the collator makes the labels
    assert infer_n_samples(no_labels, torch.nn.Linear(2, 2))[0] == 3
    assert infer_n_samples([{"labels": 1}] * 7, gpt)[0] == 7
    assert infer_n_samples(iter([]), gpt)[0] is None


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "l1sparse.integrations.huggingface", raising=False)
    with pytest.raises(ImportError, match=r"pip install l1sparse\[huggingface\]"):
        importlib.import_module("l1sparse.integrations.huggingface")


def test_core_imports_no_trainer_library():
    code = ("import sys, l1sparse, l1sparse.integrations; "
            "print(sorted(m for m in ('transformers', 'accelerate', 'lightning') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.strip() == "[]"


def test_logged_values_per_tensor_and_without_n():
    from l1sparse import SparsityScheduler, mlp
    from l1sparse.integrations import metrics

    net = mlp(6, [8], 3, seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = SparsityScheduler(opt, model=net, layer_zero_fraction=[0.5, 0.25], total_steps=5)
    values = metrics(sched)
    assert "l1sparse/lambda" not in values and values["l1sparse/met"] == 0.0  # no N: no λ
    assert values["l1sparse/nnz"] == 6 * 8 + 8 * 3 and values["l1sparse/zero_fraction"] == 0.0
    sched.remove()
    sched = SparsityScheduler(opt, model=net, layer_zero_fraction=[0.5, 0.25], total_steps=5,
                              n_samples=100)
    assert {k for k in metrics(sched) if "lambda" in k} == {"l1sparse/lambda/fc1",
                                                            "l1sparse/lambda/fc2"}
    sched.remove()
