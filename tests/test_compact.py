"""compact / unit_report: dropping switched-off hidden units keeps the function."""

import pytest
import torch
from torch import nn

from l1sparse.compact import compact, rebalance, unit_report
from l1sparse.penalty import penalised_layers
from l1sparse.models import mlp


def _outputs_agree(a, b):
    x = torch.randn(64, a.in_features, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_units_without_input_or_output_are_removed_and_the_function_kept(activation):
    net = mlp(6, [5, 4], 3, activation=activation, seed=0)
    with torch.no_grad():
        net.fc1.bias.fill_(0.3)  # σ(b) ≠ 0: the constant units must be folded, not just dropped
        net.fc1.weight[1] = 0      # h1 unit 1: no input (constant σ(0.3))
        net.fc2.weight[:, 3] = 0   # h1 unit 3: no output
        net.fc2.weight[2] = 0      # h2 unit 2: no input
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = unit_report(net)
    assert [(r.layer, r.width, r.no_input, r.no_output, r.live) for r in report] == [
        ("fc1", 5, 1, 1, 3), ("fc2", 4, 1, 0, 3)]
    small = compact(net)
    assert small.hidden == [3, 3]
    _outputs_agree(net, small)
    for k, v in net.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])


def test_folding_a_unit_can_silence_the_next_one():
    net = mlp(4, [3, 3], 2, seed=1)
    with torch.no_grad():
        net.fc1.bias.fill_(0.5)
        net.fc1.weight[0] = 0            # h1 unit 0 constant ...
        net.fc2.weight[1] = 0
        net.fc2.weight[1, 0] = 0.7       # ... and the only input of h2 unit 1
    small = compact(net)
    assert small.hidden == [2, 2]        # h2 unit 1 became constant once h1 unit 0 was folded
    _outputs_agree(net, small)


def test_a_layer_with_every_unit_switched_off_keeps_one():
    net = mlp(4, [3], 2, seed=2)
    with torch.no_grad():
        net.fc1.weight.zero_()
        net.fc1.bias.copy_(torch.tensor([0.2, -0.1, 0.4]))
    small = compact(net)
    assert small.hidden == [1]
    _outputs_agree(net, small)


def test_a_model_without_switched_off_units_is_copied_unchanged():
    net = mlp(5, [4], 2, seed=0)
    small = compact(net)
    assert small.hidden == [4] and small is not net
    for a, b in zip(net.parameters(), small.parameters()):
        assert torch.equal(a, b)


def test_only_mlps_are_accepted():
    with pytest.raises(TypeError, match="MLP"):
        unit_report(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))


def test_compact_leaves_the_global_random_stream_alone():
    net = mlp(6, [5, 4], 3, seed=0)
    with torch.no_grad():
        net.fc2.weight[:, 0] = 0
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    compact(net)
    assert torch.equal(torch.rand(3), expected)


def test_rebalance_keeps_the_function_and_balances_every_unit():
    net = mlp(6, [5, 4], 3, seed=0)
    with torch.no_grad():
        net.fc1.weight.mul_(torch.tensor([0.1, 1.0, 5.0, 2.0, 0.3])[:, None])  # unbalanced
        net.fc2.weight[:, 4] = 0  # a unit without output stays as it is
    lambdas = {"fc1": 2.0, "fc2": 1.0, "fc3": 0.5}
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def penalty(m):
        return sum(lambdas[n] * float(layer.weight.detach().abs().sum())
                   for n, layer in penalised_layers(m))

    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, pen = net(x), penalty(net)
    rebalance(net, lambdas)
    torch.testing.assert_close(net(x), out, rtol=1e-5, atol=1e-6)
    assert penalty(net) < pen
    # the last layer visited is balanced: λ_in‖a_j‖₁ = λ_out‖b_j‖₁ for every unit of h2
    torch.testing.assert_close(lambdas["fc2"] * net.fc2.weight.abs().sum(1),
                               lambdas["fc3"] * net.fc3.weight.abs().sum(0))
    assert torch.equal(net.fc1.weight[4], before["fc1.weight"][4])


def test_rebalance_refuses_activations_it_would_change():
    with pytest.raises(ValueError, match="positively homogeneous"):
        rebalance(mlp(3, [2], 1, activation="tanh"), {"fc1": 1.0, "fc2": 1.0})


# --- compact_model: convolutional networks and Transformers -------------------------------------

import warnings  # noqa: E402

from l1sparse.compact import PrunedMultiheadAttention, compact_model  # noqa: E402
from l1sparse.models import resnet_small, vit_small  # noqa: E402

pytest.importorskip("torch_pruning")


def _x(n=16, seed=0):
    return torch.randn(n, 784, generator=torch.Generator().manual_seed(seed))


def _records(result):
    return {r.tensor: r for r in result.records}


@torch.no_grad()
def _resnet_with_dead_channels():
    net = resnet_small(width=8, blocks=(1, 1), seed=0)
    net.train()
    net(_x(32, seed=5))  # BatchNorm statistics that are not the defaults
    net.eval()
    block = net.stages[0][0]
    block.conv1.weight[[0, 3]] = 0  # no input: constant after BatchNorm ...
    block.bn1.bias[0] = -1.0        # ... channel 0 silenced by the ReLU (removable)
    block.bn1.bias[3] = 0.5         # ... channel 3 a constant 0.5 (zero padding: kept)
    block.bn1.running_mean[[0, 3]] = 0.0  # the statistics of a channel without input
    block.conv2.weight[:, 5] = 0    # conv1's channel 5 is read by nobody (removable)
    block.conv2.weight[2] = 0       # conv2's channel 2 joins the residual stream (kept)
    return net


def test_dead_conv_channels_go_with_their_batchnorm_and_the_function_is_kept():
    net = _resnet_with_dead_channels()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = compact_model(net, _x())
    small = result.model
    assert small.stages[0][0].conv1.out_channels == 6 and small.stages[0][0].bn1.num_features == 6
    assert small.stages[0][0].conv2.in_channels == 6
    rec = _records(result)
    assert (rec["stages.0.0.conv1"].dead, rec["stages.0.0.conv1"].removed) == (3, 2)
    assert "constant nonzero" in rec["stages.0.0.conv1"].note
    assert rec["stages.0.0.conv2"].removed == 0 and "residual" in rec["stages.0.0.conv2"].note
    assert rec["fc"].removed == 0 and rec["fc"].note == "the model's output"
    with torch.no_grad():
        x = _x(64, seed=1)
        torch.testing.assert_close(small(x), net(x), rtol=0, atol=1e-5)
    assert result.max_abs_diff <= 1e-5
    for k, v in net.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])


def test_a_chain_through_flatten_into_a_linear_layer_and_a_grouped_conv_not_checked():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 6, 3, groups=3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 11 * 11, 8), nn.GELU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        net[4].weight[1] = 0
        net[4].bias[1] = -0.2          # silenced by the ReLU, through the flatten
        net[7].weight[2] = 0
        net[7].bias[2] = 0.0           # GELU(0) = 0: silent
        net[7].weight[5] = 0
        net[7].bias[5] = 0.3           # GELU(0.3) ≠ 0: constant, kept
        net[9].weight[:, 6] = 0        # read by nobody
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    result = compact_model(net, x)
    rec = _records(result)
    assert rec["0"].note == "not a chain (traced ConvolutionBackward0)"  # into a grouped conv
    assert rec["4"].removed == 0 and "grouped" in rec["4"].note  # not checked: tied channels
    assert (rec["7"].dead, rec["7"].removed) == (3, 2)
    assert result.model[7].out_features == 6 and result.model[9].in_features == 6
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), net(x), rtol=0, atol=1e-5)


@torch.no_grad()
def _vit_with_dead_heads_and_units():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vit = vit_small(dim=16, depth=2, heads=4, mlp_dim=32, seed=0).eval()
    attn = vit.encoder.layers[0].self_attn
    attn.in_proj_weight[32 + 4:32 + 8] = 0  # head 1: zero value rows (its value bias folded)
    attn.out_proj.weight[:, 12:16] = 0      # head 3: zero out_proj columns
    layer = vit.encoder.layers[1]
    layer.linear1.weight[[1, 2]] = 0        # no input: GELU(b) folded into linear2's bias
    layer.linear2.weight[:, 7] = 0          # no output
    return vit


def test_dead_attention_heads_and_ffn_units_are_removed_with_the_same_predictions():
    vit = _vit_with_dead_heads_and_units()
    with torch.no_grad():  # a nonzero value bias: the head outputs it everywhere
        vit.encoder.layers[0].self_attn.in_proj_bias[32 + 4:32 + 8] = 0.3
    result = compact_model(vit, _x())
    rec = _records(result)
    assert (rec["encoder.layers.0.self_attn.in_proj_weight"].removed,
            rec["encoder.layers.1.linear1"].removed) == (2, 3)
    assert rec["patch_embed"].removed == 0  # on the residual stream of the encoder
    attn = result.model.encoder.layers[0].self_attn
    assert isinstance(attn, PrunedMultiheadAttention) and attn.kept_heads == [0, 2]
    assert attn.in_proj_weight.shape == (24, 16) and attn.out_proj.weight.shape == (16, 8)
    assert result.model.encoder.layers[1].linear1.out_features == 29
    x = _x(32, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), vit(x), rtol=0, atol=1e-5)
        vit.train()
        result.model.train()  # no dropout in the zoo ViT: training mode is the same function
        torch.testing.assert_close(result.model(x), vit(x), rtol=0, atol=1e-5)


def test_without_example_inputs_only_transformer_units_are_compacted():
    vit = _vit_with_dead_heads_and_units()
    result = compact_model(vit)
    assert result.max_abs_diff is None
    assert [r.unit for r in result.records] == ["FFN hidden unit", "attention head"] * 2
    with torch.no_grad():
        torch.testing.assert_close(result.model(_x()), vit(_x()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_pruned_attention_with_masks_equals_the_original(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.out_proj.weight[:, 4:8] = 0  # head 1 silent
    holder = nn.Module()
    holder.attn = mha
    small = compact_model(holder).model.attn
    assert isinstance(small, PrunedMultiheadAttention) and small.num_heads == 2
    q = torch.randn(2, 5, 12) if batch_first else torch.randn(5, 2, 12)
    pad = torch.tensor([[False] * 4 + [True], [False] * 5])
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    heads = torch.zeros(2 * 3, 5, 5)
    heads[1::3, :, 0] = -1e4  # a per-head float mask (N·H, L, S): the kept heads' rows are used
    with torch.no_grad():
        for kw in ({}, {"key_padding_mask": pad}, {"attn_mask": causal},
                   {"attn_mask": causal, "key_padding_mask": pad}, {"attn_mask": heads}):
            torch.testing.assert_close(small(q, q, q, need_weights=False, **kw)[0],
                                       mha(q, q, q, need_weights=False, **kw)[0],
                                       rtol=0, atol=1e-5)


class _TwoHeads(nn.Module):
    """Returns a hidden layer's activations as well as the logits: those units are outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h), h


def test_units_the_model_returns_are_kept():
    torch.manual_seed(0)
    net = _TwoHeads().eval()
    with torch.no_grad():
        net.fc2.weight[:, 1] = 0  # nobody reads unit 1 of fc1 ... except the caller
    result = compact_model(net, torch.randn(4, 6))
    assert _records(result)["fc1"].removed == 0
    assert _records(result)["fc1"].note == "the model's output"
    assert result.model.fc1.out_features == 5 and result.max_abs_diff == 0.0
