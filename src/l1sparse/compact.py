"""Units that an ℓ1 solution has switched off, and the smaller dense network without them.

:func:`compact` and :func:`unit_report` do this for the built-in MLP; :func:`compact_model`
for convolutional networks (channels, their BatchNorm with them) and Transformers (FFN hidden
units, attention heads), with the same rule: a unit is removed only where that is exact.
(One module of about 550 lines: both halves share that rule and its tests.)

With one λ across layers, the ℓ1 penalty on a chain of layers zeroes whole units: a hidden unit
whose outgoing weights are all zero cannot change the output, and one whose incoming weights are
all zero outputs the constant σ(b). On Fashion-MNIST at 95 % zeros, LeNet-300-100 keeps only a
small share of its first-layer units with both an incoming and an outgoing weight (the counts,
as measured, are in the *live units* column of ``benchmarks/RESULTS.md``).
:func:`compact` removes the others (folding the constant ones into the next bias) and returns a
narrower :class:`~l1sparse.models.MLP` computing the same function, dense and fast.

:func:`rebalance` is the other exact transformation of such a network: scaling a ReLU unit's
incoming weights and bias by c > 0 and its outgoing weights by 1/c leaves the function alone and
changes the penalty λ_in·c·‖a‖₁ + λ_out·‖b‖₁/c, smallest at c = √(λ_out‖b‖₁ / (λ_in‖a‖₁)),
where it is 2√(λ_in λ_out ‖a‖₁‖b‖₁): a concave function of the unit's strength, which is why
the ℓ1 objective prefers few strong units to many weak ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .models import ACTIVATIONS, MLP

__all__ = ["UnitReport", "unit_report", "compact", "rebalance", "Compaction", "CompactResult",
           "PrunedMultiheadAttention", "compact_model"]


@dataclass(frozen=True)
class UnitReport:
    """The units of one hidden layer (the outputs of ``layer``)."""

    layer: str
    width: int
    no_input: int  # all incoming weights zero: the unit outputs a constant
    no_output: int  # all outgoing weights zero: the unit does not reach the output
    live: int  # neither

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    if not isinstance(model, MLP):
        raise TypeError("Unit reports and compaction need an l1sparse MLP (fc1, act1, fc2, ...); "
                        f"got {type(model).__name__}.")
    return [(n, m) for n, m in model.named_children() if isinstance(m, nn.Linear)]


def _dead(w_in: torch.Tensor, w_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (w_in != 0).sum(dim=1) == 0, (w_out != 0).sum(dim=0) == 0


@torch.no_grad()
def unit_report(model: MLP) -> list[UnitReport]:
    """Per hidden layer: how many units have no incoming weight, no outgoing weight, or both."""
    linears = _linears(model)
    out = []
    for (name, a), (_, b) in zip(linears, linears[1:]):
        no_in, no_out = _dead(a.weight, b.weight)
        out.append(UnitReport(name, a.out_features, int(no_in.sum()), int(no_out.sum()),
                              int((~no_in & ~no_out).sum())))
    return out


@torch.no_grad()
def compact(model: MLP) -> MLP:
    """A narrower copy of ``model`` without the hidden units that cannot matter.

    A unit with no outgoing weight is dropped; a unit with no incoming weight outputs the
    constant ``σ(b_j)``, which is added to the next layer's bias (``b' = b + W[:, j]·σ(b_j)``)
    before the unit is dropped. Repeated until no unit qualifies, since dropping one can
    silence another. The result computes the same function up to float rounding; every hidden
    layer keeps at least one unit. ``model`` is not changed.
    """
    linears = _linears(model)
    weights = [m.weight.detach().clone() for _, m in linears]
    biases = [m.bias.detach().clone() if m.bias is not None
              else torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device)
              for _, m in linears]
    act = ACTIVATIONS[model.activation]()
    changed = True
    while changed:
        changed = False
        for k in range(len(weights) - 1):  # hidden layer k: outputs of weights[k]
            no_in, no_out = _dead(weights[k], weights[k + 1])
            drop = no_in | no_out
            if not drop.any():
                continue
            if bool(drop.all()):  # keep one unit, so the architecture stays an MLP
                keep_one = int(torch.nonzero(~no_out)[0]) if (~no_out).any() else 0
                drop[keep_one] = False
                if not drop.any():
                    continue
            fold = drop & no_in & ~no_out
            if fold.any():
                biases[k + 1] += weights[k + 1][:, fold] @ act(biases[k][fold])
            keep = ~drop
            weights[k], biases[k] = weights[k][keep], biases[k][keep]
            weights[k + 1] = weights[k + 1][:, keep]
            changed = True
    with torch.random.fork_rng(devices=[]):  # its random initial weights are overwritten
        small = MLP(model.in_features, [w.shape[0] for w in weights[:-1]], model.out_features,
                    activation=model.activation).to(dtype=weights[0].dtype,
                                                    device=weights[0].device)
    for (_, m), w, b in zip(_linears(small), weights, biases):
        m.weight.copy_(w)
        m.bias.copy_(b)
    return small


_POSITIVELY_HOMOGENEOUS = ("relu",)


@torch.no_grad()
def rebalance(model: MLP, lambdas: dict[str, float], optimizer=None) -> None:
    """Rescale every hidden unit, in place, to minimise its share of ``Σ λ_k‖W_k‖₁``.

    Unit j between layers ``k`` and ``k+1`` gets ``c = √(λ_{k+1}‖b_j‖₁ / (λ_k‖a_j‖₁))``: its
    incoming weights and bias are multiplied by c, its outgoing weights divided by it (units
    with no incoming or no outgoing weight are left alone). The network computes the same
    function, since ReLU is positively homogeneous; the penalty does not grow. Layers are
    visited front to back, each with the scales the previous one left. With ``optimizer``,
    momentum buffers (``momentum_buffer``) are rescaled like the gradients they follow (a
    weight scaled by c has its gradient scaled by 1/c).
    """
    linears = _linears(model)
    if model.activation not in _POSITIVELY_HOMOGENEOUS:
        raise ValueError("rebalance keeps the function only for positively homogeneous "
                         f"activations {_POSITIVELY_HOMOGENEOUS}; got {model.activation!r}.")
    for (inner, a), (outer, b) in zip(linears, linears[1:]):
        lam_in, lam_out = float(lambdas[inner]), float(lambdas[outer])
        if lam_in <= 0 or lam_out <= 0:
            continue
        na, nb = a.weight.abs().sum(dim=1), b.weight.abs().sum(dim=0)
        both = (na > 0) & (nb > 0)
        c = torch.ones_like(na)
        c[both] = torch.sqrt(lam_out * nb[both] / (lam_in * na[both]))
        scaled = [(a.weight, c[:, None]), (b.weight, 1 / c[None, :])]
        if a.bias is not None:
            scaled.append((a.bias, c))
        for p, scale in scaled:
            p.mul_(scale)
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].div_(scale)


# --------------------------------------------------------------------------- beyond the MLP
#
# compact_model: the same idea for convolutional networks and Transformers. A unit is removed
# only where removing it is exact: its output is identically 0 after the activation (no
# incoming weight, and the constant the bias/BatchNorm/activation make of it is 0), or nothing
# reads it (every consumer's weights for it are 0), and it is not on a residual stream. For an
# FFN hidden unit (a token-wise Linear → activation → Linear, no padding) a constant output is
# folded into the next bias; for a convolution it is not (zero padding makes it non-constant
# at the borders), and such channels are reported "dead, kept". Which module reads which
# channel comes from torch-pruning's DependencyGraph, traced on example inputs; where the
# traced graph is not a chain (a residual add, a concatenation, a grouped convolution, a
# module it does not know) the channels are reported as kept or "not checked".


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact_model` found and did for the units of one tensor."""

    tensor: str  # the tensor producing the units (its name in the penalised set)
    unit: str  # "output channel", "output unit", "FFN hidden unit" or "attention head"
    width: int
    dead: int  # units with no incoming weight or no outgoing weight
    removed: int
    note: str = ""  # why dead units were kept, or "not checked: ..."

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CompactResult:
    """The smaller model and one :class:`Compaction` per tensor looked at."""

    model: nn.Module
    records: list[Compaction]
    max_abs_diff: float | None = None  # on the example inputs, when given

    def table(self) -> str:
        rows = [f"{'tensor':<42}{'unit':>17}{'width':>7}{'dead':>6}{'removed':>9}  note"]
        rows += [f"{r.tensor:<42}{r.unit:>17}{r.width:>7}{r.dead:>6}{r.removed:>9}  {r.note}"
                 for r in self.records]
        return "\n".join(rows)


class PrunedMultiheadAttention(nn.Module):
    """Multi-head attention with some heads removed: ``num_heads`` heads of ``head_dim`` over
    an ``embed_dim`` stream (``num_heads · head_dim`` may be smaller than ``embed_dim``).

    Called as :class:`torch.nn.MultiheadAttention` is (``query, key, value, key_padding_mask,
    need_weights, attn_mask, average_attn_weights, is_causal``); returns ``(output, None)``:
    the attention weights are not returned. ``_qkv_same_embed_dim`` is False, so
    :class:`~torch.nn.TransformerEncoderLayer` takes its ordinary (not its fused) path.
    """

    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, batch_first: bool,
                 kept_heads: list[int], original_heads: int) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first = batch_first
        self.kept_heads, self.original_heads = list(kept_heads), original_heads
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner))
        self.out_proj = nn.Linear(inner, embed_dim)

    def _mask(self, attn_mask, key_padding_mask, n: int, q_len: int, k_len: int, like):
        """One additive float mask (N, heads, L, S), or None."""
        mask = None
        if attn_mask is not None:
            m = attn_mask
            if m.dtype == torch.bool:
                m = torch.zeros_like(m, dtype=like.dtype).masked_fill(m, float("-inf"))
            if m.dim() == 3:  # (N·H, L, S) for the original heads: keep those kept
                m = m.view(n, self.original_heads, q_len, k_len)[:, self.kept_heads]
            mask = m.to(like.dtype)
        if key_padding_mask is not None:
            k = key_padding_mask
            if k.dtype == torch.bool:
                k = torch.zeros_like(k, dtype=like.dtype).masked_fill(k, float("-inf"))
            k = k.to(like.dtype).view(n, 1, 1, k_len)
            mask = k if mask is None else mask + k
        return mask

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        if self.num_heads == 0:  # every head removed: the output is the (folded) bias
            out = self.out_proj.bias.expand(n, q_len, self.embed_dim)
        else:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)

            def heads(x, w, b):
                return nn.functional.linear(x, w, b).view(
                    n, -1, self.num_heads, self.head_dim).transpose(1, 2)

            q, k, v = heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)
            mask = self._mask(attn_mask, key_padding_mask, n, q_len, k_len, q)
            out = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=bool(is_causal and mask is None))
            out = self.out_proj(out.transpose(1, 2).reshape(n, q_len, -1))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _keep_one(drop: torch.Tensor) -> torch.Tensor:
    """Keep at least one unit, so every layer keeps a shape (the kept one is exact either way)."""
    if bool(drop.all()):
        drop = drop.clone()
        drop[0] = False
    return drop


def _linear(weight: torch.Tensor, bias: torch.Tensor, like: nn.Linear) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    layer.train(like.training)
    return layer


def _activation(layer: nn.TransformerEncoderLayer):
    act = layer.activation
    return act if callable(act) else ACTIVATIONS[str(act)]()


@torch.no_grad()
def _compact_ffn(root: nn.Module, name: str, layer: nn.TransformerEncoderLayer,
                 names: dict[int, str]) -> Compaction:
    """Remove the FFN hidden units of one encoder layer that are dead: no outgoing weight, or
    no incoming weight (their constant act(b) is folded into linear2's bias)."""
    w1, w2 = layer.linear1.weight, layer.linear2.weight
    b1 = layer.linear1.bias if layer.linear1.bias is not None else torch.zeros_like(w1[:, 0])
    b2 = layer.linear2.bias if layer.linear2.bias is not None else torch.zeros_like(w2[:, 0])
    no_in, no_out = (w1 == 0).all(dim=1), (w2 == 0).all(dim=0)
    drop = _keep_one(no_in | no_out)
    record = Compaction(names.get(id(w1), f"{name}.linear1"), "FFN hidden unit", w1.shape[0],
                        int((no_in | no_out).sum()), int(drop.sum()))
    if drop.any():
        fold = drop & no_in & ~no_out
        b2 = b2 + w2[:, fold] @ _activation(layer)(b1[fold])
        keep = ~drop
        layer.linear1 = _linear(w1[keep], b1[keep], layer.linear1)
        layer.linear2 = _linear(w2[:, keep], b2, layer.linear2)
    return record


@torch.no_grad()
def _compact_heads(root: nn.Module, name: str, attn: nn.MultiheadAttention,
                   names: dict[int, str]) -> Compaction:
    """Remove the heads whose value rows or out_proj columns are all zero."""
    label = names.get(id(attn.in_proj_weight), f"{name}.in_proj_weight")
    if not (getattr(attn, "_qkv_same_embed_dim", False) and attn.in_proj_bias is not None
            and attn.bias_k is None and not attn.add_zero_attn):
        return Compaction(label, "attention head", attn.num_heads, 0, 0,
                          "not checked: separate q/k/v projections, no bias, or bias_k/v")
    e, h = attn.embed_dim, attn.num_heads
    d = e // h
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    w_o, b_o = attn.out_proj.weight, attn.out_proj.bias
    v_zero = (w_v.view(h, d, e) == 0).flatten(1).all(dim=1)
    o_zero = (w_o.view(e, h, d) == 0).transpose(0, 1).flatten(1).all(dim=1)
    dead = v_zero | o_zero
    if not dead.any():
        return Compaction(label, "attention head", h, 0, 0)
    b_o = b_o.clone() if b_o is not None else torch.zeros(e, dtype=w_o.dtype, device=w_o.device)
    for j in torch.nonzero(v_zero & ~o_zero).flatten().tolist():
        # softmax rows sum to 1: a head with zero value rows outputs its value bias everywhere
        b_o += w_o[:, j * d:(j + 1) * d] @ b_v[j * d:(j + 1) * d]
    kept = [j for j in range(h) if not bool(dead[j])]
    rows = [r for j in kept for r in range(j * d, (j + 1) * d)]
    new = PrunedMultiheadAttention(e, len(kept), d, batch_first=attn.batch_first,
                                   kept_heads=kept, original_heads=h).to(w_o)
    new.in_proj_weight.copy_(torch.cat([w_q[rows], w_k[rows], w_v[rows]]))
    new.in_proj_bias.copy_(torch.cat([b_q[rows], b_k[rows], b_v[rows]]))
    new.out_proj.weight.copy_(w_o[:, rows])
    new.out_proj.bias.copy_(b_o)
    new.train(attn.training)
    _replace(root, name, new)
    return Compaction(label, "attention head", h, int(dead.sum()), h - len(kept))


# what a traced elementwise op does to a per-channel constant c: a function of c, or None for
# an op that keeps 0 at 0 (pooling, reshaping, dropout in eval) but nothing else known
_CONSTANT_MAPS = {
    "ReluBackward0": lambda c: c.clamp(min=0), "GeluBackward0": nn.functional.gelu,
    "SiluBackward0": nn.functional.silu, "TanhBackward0": torch.tanh,
    "SigmoidBackward0": torch.sigmoid,
}
_ZERO_PRESERVING = ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "ViewBackward",
                    "ReshapeAlias", "UnsafeView", "CloneBackward", "NativeDropoutBackward",
                    "LeakyReluBackward", "HardtanhBackward", "ExpandBackward")
_TRANSPOSED_WEIGHT = "TBackward0"  # a Linear consumer's weight.t(): not on the data path


def _op_name(node) -> str:
    return node.grad_fn.name() if getattr(node, "grad_fn", None) is not None else ""


def _constant_after(value: torch.Tensor, module, node) -> torch.Tensor | None:
    """The per-channel constant after one node of the chain; None where not known."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if isinstance(module, _BatchNorm):
        if module.running_mean is None:
            return None
        value = (value - module.running_mean) / torch.sqrt(module.running_var + module.eps)
        if module.affine:
            value = value * module.weight + module.bias
        return value
    op = _op_name(node)
    if op in _CONSTANT_MAPS:
        return _CONSTANT_MAPS[op](value)
    if op.startswith(_ZERO_PRESERVING) or type(module).__name__ in ("_ReshapeOp",
                                                                    "_FlattenIndexMapping"):
        return torch.where(value == 0, value, torch.full_like(value, float("nan")))
    return None


def _chain_units(dg, producer: nn.Module, label: str, unit: str, outputs: set) -> Compaction:
    """Remove the dead output units of one Conv/Linear whose traced graph to its consumers is a
    chain (BatchNorm, activations, pooling, reshapes); report them kept elsewhere."""
    import torch_pruning as tp
    from torch.nn.modules.batchnorm import _BatchNorm

    w = producer.weight
    width = w.shape[0]
    if isinstance(producer, nn.modules.conv._ConvNd) and producer.groups != 1:
        return Compaction(label, unit, width, 0, 0, "not checked: grouped convolution "
                          "(its channels are tied to its input's)")
    prune = (tp.prune_conv_out_channels if isinstance(producer, nn.modules.conv._ConvNd)
             else tp.prune_linear_out_channels)
    no_in = (w.reshape(width, -1) == 0).all(dim=1)
    group = dg.get_pruning_group(producer, prune, idxs=list(range(width)))
    # walk the traced graph from the producer: the chain's ops in order, up to the consumers
    bias = (producer.bias.detach() if producer.bias is not None
            else torch.zeros(width, dtype=w.dtype, device=w.device))
    value, node, consumers, coupled = bias.reshape(-1).clone(), dg.module2node[producer], [], ""
    frontier = [(node, value)]
    seen = set()
    while frontier:
        node, value = frontier.pop()
        if not node.outputs or node.grad_fn in outputs:  # what the model returns
            coupled = coupled or "model output"
        for nxt in node.outputs:
            if id(nxt) in seen:
                continue
            seen.add(id(nxt))
            module = nxt.module
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not (
                    isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1):
                consumers.append((module, value))
                continue
            if isinstance(module, _BatchNorm) or _op_name(nxt) in _CONSTANT_MAPS or \
                    _op_name(nxt).startswith(_ZERO_PRESERVING) or \
                    type(module).__name__ in ("_ReshapeOp", "_FlattenIndexMapping"):
                after = _constant_after(value, module, nxt)
                frontier.append((nxt, after if after is not None
                                 else torch.full_like(value, float("nan"))))
                continue
            coupled = _op_name(nxt) or type(module).__name__
    if coupled:
        what = ("on a residual stream" if coupled.startswith(("Add", "Sub")) else
                "the model's output" if coupled == "model output" else
                f"not a chain (traced {coupled})")
        dead = int(no_in.sum())
        return Compaction(label, unit, width, dead, 0, f"dead, kept: {what}" if dead else what)
    if not consumers:
        return Compaction(label, unit, width, int(no_in.sum()), 0,
                          "dead, kept: the model's output" if no_in.any() else "the model's output")
    no_out = torch.ones(width, dtype=torch.bool, device=w.device)
    for item in group._group:
        target = item.dep.target.module
        if target is producer or getattr(item.dep.handler, "__name__", "") != "prune_in_channels":
            continue
        if isinstance(target, (nn.Linear, nn.modules.conv._ConvNd)):
            cols = torch.as_tensor(item.idxs, dtype=torch.long)
            roots = torch.as_tensor(item.root_idxs, dtype=torch.long)
            by_input = (target.weight if isinstance(target, nn.modules.conv._ConvTransposeNd)
                        else target.weight.transpose(0, 1))  # input units along dim 0
            used = (by_input[cols] != 0).reshape(len(cols), -1).any(dim=1)
            no_out[roots[used]] = False
    silent = torch.ones(width, dtype=torch.bool, device=w.device)
    for _, value in consumers:
        silent &= value == 0  # NaN (unknown) compares unequal: not silent
    dead = no_in | no_out
    drop = _keep_one((no_in & silent) | no_out)
    constant = int((dead & ~drop).sum())
    note = f"{constant} dead, kept: constant nonzero output" if constant else ""
    if drop.any():
        dg.get_pruning_group(producer, prune, idxs=torch.nonzero(drop).flatten().tolist()).prune()
    return Compaction(label, unit, width, int(dead.sum()), int(drop.sum()), note)


def _inside(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@torch.no_grad()
def compact_model(model: nn.Module, example_inputs=None, *, check: bool = True,
                  atol: float = 1e-5) -> CompactResult:
    """A smaller dense copy of ``model`` (in eval mode) computing the same function.

    Removed, where exact: the output channels of convolutions and output units of linear layers
    that no later layer reads or that output 0 after their BatchNorm and activation (the
    BatchNorm channel goes with them), when the traced graph from the layer to its consumers
    is a chain; the hidden units of each :class:`~torch.nn.TransformerEncoderLayer`'s FFN with no
    outgoing weight or no incoming weight (whose constant is folded into ``linear2``'s bias);
    and the heads of each :class:`~torch.nn.MultiheadAttention` whose value rows or
    ``out_proj`` columns are all zero (a value bias folded into ``out_proj``'s bias), replaced
    by a :class:`PrunedMultiheadAttention`. Channels on a residual stream, constant nonzero
    channels and units where the graph is not a chain are reported "dead, kept" or "not
    checked". BatchNorm uses its running statistics: the result is for inference.

    Parameters
    ----------
    model : nn.Module
        Not changed.
    example_inputs : tensor or tuple of tensors, optional
        Inputs for one forward pass: needed to trace the graph for convolution and linear
        channels (with torch-pruning's ``DependencyGraph``; ``pip install l1sparse[compact]``);
        without them only Transformer FFN units and attention heads are compacted.
    check : bool, default True
        Compare the outputs of both models on ``example_inputs``; raise if they differ by more
        than ``atol`` (relative to the output's scale).
    atol : float, default 1e-5

    Returns
    -------
    CompactResult
        ``.model``, ``.records`` (one :class:`Compaction` per tensor looked at),
        ``.max_abs_diff`` on the example inputs, ``.table()``.

    Raises
    ------
    ImportError
        If ``example_inputs`` are given and torch-pruning is not installed.
    RuntimeError
        If ``check`` finds the outputs differ (a bug: compaction must be exact).
    """
    import copy

    from torch.utils._pytree import tree_leaves

    from .tensors import select_tensors

    if not isinstance(model, nn.Module):
        raise ValueError(f"The 'model' parameter must be an nn.Module. Got {type(model).__name__}.")
    small = copy.deepcopy(model).eval()
    try:
        tensors = select_tensors(small, warn=False)
    except ValueError:
        tensors = []
    names = {id(t.param): t.name for t in tensors}
    inputs = (example_inputs if isinstance(example_inputs, tuple) or example_inputs is None
              else (example_inputs,))
    records: list[Compaction] = []
    transformer = [n for n, m in small.named_modules()
                   if isinstance(m, (nn.TransformerEncoderLayer, nn.MultiheadAttention))]
    if inputs is not None:
        import torch_pruning as tp

        with torch.enable_grad(), warnings.catch_warnings():
            # a parameter outside any layer (a position table) is never pruned here
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            outputs: set = set()  # the autograd nodes of the traced outputs

            def capture(out):
                outputs.update(o.grad_fn for o in tree_leaves(out)
                               if isinstance(o, torch.Tensor) and o.grad_fn is not None)
                return out

            dg = tp.DependencyGraph().build_dependency(small, example_inputs=inputs,
                                                       output_transform=capture)
        for name, module in list(small.named_modules()):
            if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or \
                    _inside(name, transformer):
                continue
            unit = "output unit" if isinstance(module, nn.Linear) else "output channel"
            if isinstance(module, nn.modules.conv._ConvTransposeNd):
                records.append(Compaction(names.get(id(module.weight), name), unit,
                                          module.weight.shape[1], 0, 0,
                                          "not checked: transposed convolution"))
                continue
            records.append(_chain_units(dg, module, names.get(id(module.weight), name), unit,
                                        outputs))
    for name, module in list(small.named_modules()):
        if isinstance(module, nn.TransformerEncoderLayer):
            records.append(_compact_ffn(small, name, module, names))
        if isinstance(module, nn.MultiheadAttention):
            records.append(_compact_heads(small, name, module, names))
    result = CompactResult(small.eval(), records)
    if check and inputs is not None:
        before = model.training
        model.eval()
        try:
            y0, y1 = (tree_leaves(m(*inputs)) for m in (model, small))
        finally:
            model.train(before)
        pairs = [(a, b) for a, b in zip(y0, y1) if isinstance(a, torch.Tensor) and a.numel()]
        diff = max((float((a - b).abs().max()) for a, b in pairs), default=0.0)
        scale = max((float(a.abs().max()) for a, _ in pairs), default=0.0)
        result.max_abs_diff = diff
        if diff > atol * max(1.0, scale):
            raise RuntimeError(f"compact_model changed the outputs by {diff:.3g} (> {atol}); "
                               "please report this model.")
    return result
