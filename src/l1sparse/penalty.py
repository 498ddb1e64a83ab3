"""Which parameters the ℓ1 term penalises, and the λ conventions.

The objective of the paper (summed-loss scale, docs/design.md §1) is

.. math::

    \\min_\\Theta \\; L(\\Theta) + \\sum_k \\lambda_k \\lVert W_k \\rVert_1,
    \\qquad L(\\Theta) = \\sum_{i=1}^N \\ell(N(\\Theta; x_i), y_i).

Which tensors are penalised is decided once by :mod:`l1sparse.tensors` (by default every
≥2-D weight of any module except embeddings and normalisation layers; ``include``/``exclude``
to choose); biases never are. A λ that this library reports or accepts is on the summed scale unless its
name says otherwise: ``lambda_per_sample = λ / N`` is the coefficient that goes with the mean
loss, which is what the optimizers see.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .sharded import abs_sum, is_dtensor, like, local
from .tensors import PenalisedTensor, describe, select_tensors

log = logging.getLogger(__name__)

__all__ = [
    "PENALISED_TYPES",
    "penalised_layers",
    "layer_names",
    "resolve_lambdas",
    "lambda_per_sample",
    "lambda_summed",
    "map_lambda",
    "l1_norms",
    "penalty_value",
    "param_groups",
    "set_group_l1",
    "UNPENALISED_GROUP",
    "L1Penalty",
    "ReweightedL1Penalty",
    "PENALTIES",
    "make_penalty",
    "L1_WEIGHT",
    "l1_weights",
    "set_l1_weights",
]

#: the layer types whose weights export writes in compressed sparse row form
PENALISED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def penalised_layers(model: nn.Module, include=None, exclude=None
                     ) -> list[tuple[str, PenalisedTensor]]:
    """``(name, tensor)`` for every penalised tensor (:func:`~l1sparse.tensors.select_tensors`),
    in model order; ``tensor.weight`` is the parameter. A thin alias kept for code written
    for layers."""
    return [(t.name, t) for t in select_tensors(model, include, exclude, warn=False)]


def layer_names(model: nn.Module, include=None, exclude=None) -> list[str]:
    """Names of the penalised tensors, in the order used by per-layer lists."""
    return [name for name, _ in penalised_layers(model, include, exclude)]


def _check_lambda(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"The '{what}' parameter must be a number. Got {value!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"The '{what}' parameter must be a finite number >= 0. Got {value!r}.")
    return value


def resolve_lambdas(
    model: nn.Module,
    lam: float | None = None,
    layer_lam: Sequence[float] | Mapping[str | int, float] | None = None,
    *,
    include=None,
    exclude=None,
) -> dict[str, float]:
    """Map every penalised layer name to its λ_k (summed-loss scale).

    Parameters
    ----------
    model : nn.Module
        The network.
    lam : float, optional
        One λ for all layers (the single-parameter model). Default 0.
    layer_lam : sequence of float, or mapping from layer name or index to float, optional
        Per-layer λ_k (the multi-parameter model). A sequence must have one entry per penalised
        layer; a mapping overrides ``lam`` for the layers it names.

    Returns
    -------
    dict
        ``{layer_name: λ_k}`` in model order.

    Raises
    ------
    ValueError
        If a λ is negative or not finite, a sequence has the wrong length, or a mapping names an
        unknown layer.

    Examples
    --------
    >>> from l1sparse.models import mlp
    >>> net = mlp(4, [8], 1)
    >>> resolve_lambdas(net, layer_lam={"fc2": 3.0}, lam=1.0)
    {'fc1': 1.0, 'fc2': 3.0}
    """
    names = layer_names(model, include, exclude)
    base = 0.0 if lam is None else _check_lambda(lam, "lam")
    lambdas = {name: base for name in names}
    if layer_lam is None:
        return lambdas
    if isinstance(layer_lam, Mapping):
        for key, value in layer_lam.items():
            if isinstance(key, int) and not isinstance(key, bool):
                if not -len(names) <= key < len(names):
                    raise ValueError(
                        f"The 'layer_lam' parameter names layer index {key}, but the model has "
                        f"{len(names)} penalised layers (0..{len(names) - 1})."
                    )
                key = names[key]
            elif key not in lambdas:
                raise ValueError(
                    f"The 'layer_lam' parameter names an unknown layer {key!r}; "
                    f"the penalised layers are {names}."
                )
            lambdas[key] = _check_lambda(value, f"layer_lam[{key!r}]")
        return lambdas
    if isinstance(layer_lam, torch.Tensor):
        layer_lam = layer_lam.tolist()
    if isinstance(layer_lam, (str, bytes)) or not isinstance(layer_lam, Sequence):
        raise ValueError(
            f"The 'layer_lam' parameter must be a sequence or a mapping. Got {layer_lam!r}."
        )
    if len(layer_lam) != len(names):
        raise ValueError(
            f"The 'layer_lam' parameter must have one value per penalised layer "
            f"({len(names)}: {names}). Got {len(layer_lam)} values."
        )
    for name, value in zip(names, layer_lam):
        lambdas[name] = _check_lambda(value, f"layer_lam[{name!r}]")
    return lambdas


def lambda_per_sample(lam: float, n_samples: int) -> float:
    """λ on the mean-loss scale: ``λ / N``."""
    if n_samples <= 0:
        raise ValueError(f"The 'n_samples' parameter must be positive. Got {n_samples}.")
    return float(lam) / n_samples


def lambda_summed(lam_per_sample: float, n_samples: int) -> float:
    """λ on the summed-loss scale from the mean-loss coefficient: ``λ_mean · N``."""
    if n_samples <= 0:
        raise ValueError(f"The 'n_samples' parameter must be positive. Got {n_samples}.")
    return float(lam_per_sample) * n_samples


def map_lambda(noise_std: float, laplace_scale: float | Sequence[float]) -> float | list[float]:
    """λ of the MAP estimate (Proposition 1): ``λ = 2 v² / s``.

    Gaussian label noise of standard deviation ``v`` and a Laplace prior of scale ``s`` on the
    weights give the single-parameter model with ``λ = 2v²/s``; a scale ``s_k`` per layer gives
    ``λ_k = 2v²/s_k``.

    >>> map_lambda(0.5, 0.25)
    2.0
    >>> map_lambda(1.0, [1.0, 2.0])
    [2.0, 1.0]
    """
    v = float(noise_std)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"The 'noise_std' parameter must be a positive number. Got {noise_std!r}.")
    scales = [laplace_scale] if not isinstance(laplace_scale, Sequence) else list(laplace_scale)
    out = []
    for s in scales:
        s = float(s)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(
                f"The 'laplace_scale' parameter must be positive. Got {laplace_scale!r}."
            )
        out.append(2.0 * v * v / s)
    return out if isinstance(laplace_scale, Sequence) else out[0]


def l1_norms(model: nn.Module, include=None, exclude=None) -> dict[str, float]:
    """``‖W_k‖₁`` for every penalised tensor."""
    with torch.no_grad():
        return {name: float(m.weight.abs().sum())
                for name, m in penalised_layers(model, include, exclude)}


def penalty_value(model: nn.Module, lambdas: Mapping[str, float], include=None,
                  exclude=None) -> float:
    """``Σ_k λ_k ‖W_k‖₁`` on the scale of ``lambdas``."""
    norms = l1_norms(model, include, exclude)
    return sum(lambdas[name] * norms[name] for name in norms)


UNPENALISED_GROUP = "unpenalised"


def param_groups(model: nn.Module, l1: Mapping[str, float] | float | None = None, *,
                 include=None, exclude=None) -> list[dict]:
    """Optimizer parameter groups: one per penalised tensor, one for everything else.

    Parameters
    ----------
    model : nn.Module
    l1 : mapping from tensor name to the ``l1`` coefficient, a single coefficient for every
        tensor, or None (default: 0, e.g. for a :class:`~l1sparse.scheduler.SparsityScheduler`
        to set). On the optimizer's scale: λ_k / N when the mean loss is back-propagated, see
        :func:`lambda_per_sample`.
    include, exclude : patterns, optional
        Which tensors are penalised (:func:`~l1sparse.tensors.select_tensors`); by default
        every ≥2-D weight of any module except embeddings and normalisation layers.

    Each group carries ``name`` (the tensor's name: ``fc1`` for a layer's only weight,
    ``layers.0.self_attn.in_proj_weight`` otherwise) so that :func:`set_group_l1` can change
    λ_k during a run without rebuilding the optimizer. Biases and every other parameter go in
    the group named ``"unpenalised"`` with ``l1 = 0``. The set in use is logged once.

    Raises
    ------
    ValueError
        If ``l1`` names a tensor outside the set, a coefficient is negative or not finite, or
        a pattern matches nothing.

    >>> from l1sparse.models import mlp
    >>> [g["name"] for g in param_groups(mlp(4, [8], 1), {"fc1": 0.1})]
    ['fc1', 'fc2', 'unpenalised']
    """
    tensors = select_tensors(model, include, exclude)
    log.info("%s", describe(tensors))
    names = [t.name for t in tensors]
    if l1 is None:
        l1 = {}
    elif not isinstance(l1, Mapping):
        l1 = {name: l1 for name in names}
    aliases = {a: t.name for t in tensors for a in (t.name, *t.aliases)}
    l1 = {aliases.get(k, k): v for k, v in l1.items()}  # a tensor's key names it too
    unknown = [k for k in l1 if k not in names]
    if unknown:
        raise ValueError(f"The 'l1' parameter names {unknown}, which are not penalised tensors "
                         f"of the model; the penalised tensors are {names}.")
    groups = []
    penalised = set()
    for t in tensors:
        coef = _check_lambda(l1.get(t.name, 0.0), f"l1[{t.name!r}]")
        groups.append({"params": [t.param], "name": t.name, "l1": coef})
        penalised.add(id(t.param))
    rest = [p for p in model.parameters() if id(p) not in penalised]
    if rest:
        groups.append({"params": rest, "name": UNPENALISED_GROUP, "l1": 0.0})
    return groups


def set_group_l1(optimizer: torch.optim.Optimizer, l1: Mapping[str, float]) -> None:
    """Set the ``l1`` hyperparameter of the named groups in place (λ as optimizer state)."""
    by_name = {g.get("name"): g for g in optimizer.param_groups}
    for name, coef in l1.items():
        if name not in by_name:
            raise ValueError(f"The optimizer has no parameter group named {name!r}.")
        by_name[name]["l1"] = _check_lambda(coef, f"l1[{name!r}]")


# --------------------------------------------------------------------------- penalty objects


class L1Penalty:
    """The plain ℓ1 penalty ``λ Σ_i |w_i|``: every weight has penalty weight ``c_i = 1``.

    A penalty object knows the pieces of its identity that the optimizers, the
    characterisation and the selector share (docs/design.md §2):

    * :meth:`value` — ``λ Σ_i c_i |w_i|``;
    * :meth:`threshold` — the soft-threshold of one proximal step, ``τ · c_i``;
    * :meth:`distance` — the distance of ``−∂L/∂w_i`` to ``λ c_i ∂|w_i|``: the first-order
      residual, zero at a stationary point;
    * :meth:`lambda_max` — the smallest λ at which ``w = 0`` is stationary,
      ``max_i |∂L/∂w_i| / c_i`` at zero;
    * :meth:`weights` — the ``c_i`` it would use for the current weights (``None`` means all 1).

    >>> p = L1Penalty()
    >>> p.value(torch.tensor([1.0, -2.0, 0.0]), 0.5)
    1.5
    >>> p.distance(torch.tensor([-0.5, 0.2, 0.7]), torch.tensor([1.0, 0.0, 0.0]), 0.5)
    tensor([0.0000, 0.0000, 0.2000])
    """

    name = "l1"
    #: whether :meth:`weights` depends on the current weights (refreshed during a run)
    adaptive = False

    def weights(self, w: torch.Tensor) -> torch.Tensor | None:
        """The penalty weights ``c_i`` for the weights ``w`` (``None``: all equal to 1)."""
        return None

    @staticmethod
    def value(w: torch.Tensor, lam: float, c: torch.Tensor | None = None) -> float:
        a = w.detach().abs()
        return float(lam * (a.sum() if c is None else (c * a).sum()))

    @staticmethod
    def threshold(tau: float, c: torch.Tensor | None = None) -> float | torch.Tensor:
        return tau if c is None else tau * c

    @staticmethod
    def distance(grad: torch.Tensor, w: torch.Tensor, lam: float,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        """``dist(−∂L/∂w_i, λ c_i ∂|w_i|)`` entrywise: ``|g + λc·sign w|`` on the support,
        ``max(|g| − λc, 0)`` off it."""
        lc = lam if c is None else lam * c
        on = (grad + lc * torch.sign(w)).abs()
        off = (grad.abs() - lc).clamp(min=0)
        return torch.where(w != 0, on, off)

    @staticmethod
    def lambda_max(grad_at_zero: torch.Tensor, c: torch.Tensor | None = None) -> float:
        g = grad_at_zero.abs()
        return float((g if c is None else g / c).max()) if g.numel() else 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReweightedL1Penalty(L1Penalty):
    """Reweighted ℓ1 ``λ Σ_i c_i |w_i|`` with ``c_i = m / (|w_i| + ε m)``, ``m`` the layer's
    mean ``|w|`` (Candès, Wakin & Boyd 2008), the weights refreshed from the current
    magnitudes every few dozen steps.

    Between refreshes it is a weighted ℓ1 penalty, so the paper's characterisation holds with
    ``λ c_i`` in place of λ (the support has ``|∂L/∂w_i| = λ c_i``, the zeros
    ``|∂L/∂w_i| ≤ λ c_i``) and the selector sorts ``γ_i / c_i``. Large weights get a small
    ``c_i`` and small ones a large one (at most ``1/ε``): the penalty approximates a log
    penalty, which, unlike plain ℓ1, does not prefer switching whole hidden units off.
    For an all-zero layer (``m = 0``) every ``c_i`` is 1.

    Parameters
    ----------
    eps : float, default 0.1
        The floor of ``|w| / m`` in the denominator; ``1/eps`` is the largest weight.
    refresh_every : int, default 50
        Optimizer steps between refreshes of the ``c_i`` (used by the scheduler).

    >>> c = ReweightedL1Penalty(eps=0.5).weights(torch.tensor([0.0, 1.0, 3.0]))
    >>> [round(float(v), 4) for v in c]
    [2.0, 0.8, 0.3636]
    """

    name = "reweighted"
    adaptive = True

    def __init__(self, eps: float = 0.1, refresh_every: int = 50,
                 scale: str = "layer") -> None:
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"The 'eps' parameter must be > 0. Got {eps!r}.")
        if int(refresh_every) != refresh_every or refresh_every < 1:
            raise ValueError(
                f"The 'refresh_every' parameter must be a positive integer. Got {refresh_every!r}.")
        if scale not in ("layer", "global"):
            raise ValueError(f"The 'scale' parameter must be 'layer' or 'global'. Got {scale!r}.")
        self.eps, self.refresh_every, self.scale = float(eps), int(refresh_every), scale
        self._global_mean: torch.Tensor | None = None

    @torch.no_grad()
    def prepare(self, weights: list[torch.Tensor]) -> None:
        """Called with every penalised weight before a refresh: the global mean |w| (a 0-d
        tensor: no host synchronisation)."""
        total = sum(w.numel() for w in weights)
        self._global_mean = (torch.stack([abs_sum(w) for w in weights])
                             .sum() / total if total and self.scale == "global" else None)

    @torch.no_grad()
    def weights(self, w: torch.Tensor) -> torch.Tensor:
        # computed on the device, without a host synchronisation: an all-zero layer (m = 0)
        # gets c = 1 through the `where`
        # a sharded weight (DTensor, FSDP2): c on the local shard, m the mean over every
        # shard, the result sharded as the weight
        a = local(w).detach().abs().float()
        m = abs_sum(w) / w.numel() if is_dtensor(w) else a.mean()
        numerator = m if self._global_mean is None else self._global_mean.to(a.device)
        # c = numerator / (a + eps·m) in place: one tensor of the weight's size, not four
        c = torch.div(numerator, a.add_(self.eps * m), out=a)
        return like(c.masked_fill_(m <= 0, 1.0), w)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g}, refresh_every={self.refresh_every})"


PENALTIES = {"l1": L1Penalty, "reweighted": ReweightedL1Penalty}


def make_penalty(penalty: "str | L1Penalty") -> L1Penalty:
    """A penalty object from its name (``"l1"``, ``"reweighted"``) or the object itself."""
    if isinstance(penalty, L1Penalty):
        return penalty
    if penalty not in PENALTIES:
        raise ValueError(f"The 'penalty' parameter must be one of {list(PENALTIES)} or a penalty "
                         f"object. Got {penalty!r}.")
    return PENALTIES[penalty]()


L1_WEIGHT = "l1_weight"  # optimizer-state key of the per-weight penalty weights c_i
L1_MASK = "l1_mask"  # optimizer-state key of the kept zeros (1 = free, 0 = kept at zero)


def l1_weights(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The per-weight penalty weights ``c_i`` held in the optimizer's state, by layer name
    (layers without them have ``c_i = 1`` and are left out)."""
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            c = optimizer.state.get(p, {}).get(L1_WEIGHT)
            if c is not None:
                out[group.get("name", str(id(p)))] = c
    return out


@torch.no_grad()
def set_l1_weights(optimizer: torch.optim.Optimizer, penalty: L1Penalty) -> None:
    """Store ``penalty.weights(w)`` for every penalised parameter in the optimizer's state
    (removed again where the penalty has none): where the proximal steps read them."""
    groups = [g for g in optimizer.param_groups
              if g.get("name", UNPENALISED_GROUP) != UNPENALISED_GROUP]
    if hasattr(penalty, "prepare"):
        penalty.prepare([p for g in groups for p in g["params"]])
    for group in groups:
        for p in group["params"]:
            c = penalty.weights(p)
            state = optimizer.state[p]
            if c is None:
                state.pop(L1_WEIGHT, None)
            else:
                state[L1_WEIGHT] = c.to(p.dtype)
