"""Hidden units that an ℓ1 solution has switched off, and the smaller dense MLP without them.

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

from dataclasses import dataclass

import torch
from torch import nn

from .models import ACTIVATIONS, MLP

__all__ = ["UnitReport", "unit_report", "compact", "rebalance"]


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
