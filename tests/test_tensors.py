"""Which tensors are penalised: the default rule by what a tensor is, include/exclude."""

import warnings

import pytest
import torch
from torch import nn

from l1sparse import param_groups, sparsity
from l1sparse.tensors import describe, select_tensors, tensor_names


class Transposed(nn.Module):
    """A model library's own linear layer, its matrix stored (in, out)."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.1)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class TinyLM(nn.Module):
    def __init__(self, vocab=20, d=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, d, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.head(self.norm(h))


def names(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [t.name for t in select_tensors(model, **kw)]


def test_default_set_is_every_weight_of_any_module_but_embeddings_norms_and_biases():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2,
                                enable_nested_tensor=False)
    got = names(enc)
    assert got == [f"layers.{i}.{n}" for i in (0, 1) for n in
                   ("self_attn.in_proj_weight", "self_attn.out_proj", "linear1", "linear2")]
    lm = TinyLM()
    assert names(lm) == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    custom = nn.Sequential(Transposed(4, 6), nn.ReLU(), nn.ConvTranspose1d(6, 3, 3),
                           nn.BatchNorm1d(3), nn.Conv1d(3, 3, 3, groups=3))
    assert names(custom) == ["0", "2", "4"]


def test_left_out_weights_are_named_in_one_warning():
    with pytest.warns(UserWarning, match=r"emb.weight \(20, 8\)"):
        select_tensors(TinyLM())


def test_a_tied_tensor_is_one_tensor_and_counts_as_an_embedding_until_named():
    lm = TinyLM()
    assert "emb" not in names(lm) and "head" not in names(lm)
    assert names(lm, include="emb") == ["emb"]  # an embedding named by its module
    chosen = select_tensors(lm, include=["head.weight", "rnn.*"])
    assert [t.key for t in chosen] == ["emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    assert set(chosen[0].aliases) == {"emb.weight", "head.weight"}
    groups = param_groups(lm, include=["emb.*", "rnn.*"])
    all_params = [p for g in groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == len(list(lm.parameters()))


def test_include_by_type_and_pattern_and_exclude_last():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10),
                        nn.Linear(10, 2))
    assert names(net, include=nn.Linear) == ["3", "4"]
    assert names(net, exclude=["0", "4"]) == ["3"]
    assert names(net, include="*.weight", exclude=nn.Conv2d) == ["3", "4"]
    assert tensor_names(net) == ["0", "3", "4"]


@pytest.mark.parametrize("kw, match", [
    ({"include": "nothing*"}, r"'include' pattern 'nothing\*' matches no tensor.*0.weight"),
    ({"include": "*.bias"}, r"only biases or normalisation weights"),
    ({"exclude": "zzz"}, r"'exclude' pattern 'zzz' matches no tensor"),
    ({"exclude": "*"}, r"no penalisable tensor"),
    ({"include": 3}, r"must be a string, an nn.Module type"),
])
def test_bad_patterns_name_the_pattern_and_list_the_candidates(kw, match):
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=match):
        select_tensors(net, **kw)


def test_a_frozen_parameter_is_never_in_the_set_and_naming_it_warns():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    net[0].weight.requires_grad_(False)
    assert names(net) == ["1"]
    with pytest.warns(UserWarning, match="frozen"):
        assert [t.name for t in select_tensors(net, include="*")] == ["1"]


def test_sparsity_shows_the_weights_outside_the_set():
    enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    rep = sparsity(enc)
    assert rep.total == 3 * 64 + 64 + 2 * 128
    assert rep.outside_total == sum(p.numel() for p in enc.parameters()) - rep.total
    assert "unpenalised" in rep.table() and "model" in rep.table()
    assert rep.model_zero_fraction < rep.zero_fraction or rep.zero_fraction == 0
    assert "self_attn.in_proj_weight" in describe(select_tensors(enc))
