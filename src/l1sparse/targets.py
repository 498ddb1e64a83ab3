"""Sparsity targets: what the user asked for, and the same in nonzero counts per scope.

A *scope* is a set of layers sharing one λ: the whole network for a global target, one layer
for a per-layer target. Tolerances are held in weights. ``nnz`` targets default to an exact
count (tolerance 0); fraction targets to 0.005 of the weights concerned, and never less than
one weight per layer (docs/design.md §3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from .penalty import penalised_layers

__all__ = ["Scope", "Target", "check_fraction", "make_target", "DEFAULT_FRACTION_TOL"]

DEFAULT_FRACTION_TOL = 0.005


@dataclass(frozen=True)
class Scope:
    """A set of layers sharing one λ, with its target and tolerance in nonzero counts."""

    layers: tuple[str, ...]
    total: int
    nnz: float
    tol: float


@dataclass(frozen=True)
class Target:
    """What the user asked for, and the same in nonzero counts per scope.

    ``kind`` is ``"nnz"`` or ``"zero_fraction"``; ``value`` a number (global) or a tuple (per
    layer); ``tol`` is in the unit of ``kind`` as given (the per-scope tolerances in weights
    are in ``scopes``).
    """

    kind: str
    value: float | tuple[float, ...]
    tol: float
    scopes: tuple[Scope, ...]

    @property
    def per_layer(self) -> bool:
        return isinstance(self.value, tuple)

    def echo(self) -> dict:
        value = list(self.value) if self.per_layer else self.value
        if self.kind == "nnz":
            value = [int(v) for v in value] if self.per_layer else int(value)
        return {"kind": self.kind, "value": value, "tol": self.tol,
                "per_layer": self.per_layer,
                "tol_weights": [int(s.tol) if s.tol == int(s.tol) else s.tol
                                for s in self.scopes]}

    def words(self) -> str:
        """The target in words, e.g. ``"90 % zeros ± 0.5 pp"`` or ``"2000 nonzeros exactly"``."""
        def one(v, scope):
            if self.kind == "nnz":
                tol = "exactly" if scope.tol == 0 else f"± {scope.tol:g}"
                return f"{int(v)} nonzeros {tol}"
            return f"{100 * v:g} % zeros ± {100 * self.tol:g} pp"
        if not self.per_layer:
            return one(self.value, self.scopes[0])
        return ", ".join(f"{s.layers[0]}: {one(v, s)}" for v, s in zip(self.value, self.scopes))

    def attained(self, nnz: Mapping[str, int]) -> float | list[float]:
        """The attained sparsity in the unit of the target."""
        vals = []
        for s in self.scopes:
            count = sum(nnz[n] for n in s.layers)
            vals.append(int(count) if self.kind == "nnz" else 1.0 - count / s.total)
        return vals if self.per_layer else vals[0]

    def distance(self, nnz: Mapping[str, int]) -> list[float]:
        """Per scope, by how many weights the attained nnz is off the target."""
        return [abs(sum(nnz[n] for n in s.layers) - s.nnz) for s in self.scopes]

    def met(self, nnz: Mapping[str, int]) -> bool:
        return all(d <= s.tol + 1e-9 for d, s in zip(self.distance(nnz), self.scopes))

    def misses(self, nnz: Mapping[str, int]) -> list[str]:
        """One phrase per scope outside its tolerance, naming the layer(s), in weights."""
        out = []
        for s in self.scopes:
            count = sum(nnz[n] for n in s.layers)
            if abs(count - s.nnz) > s.tol + 1e-9:
                where = s.layers[0] if len(s.layers) == 1 else "the network"
                out.append(f"{where}: {count} nonzeros, target {s.nnz:g} ± {s.tol:g} weights")
        return out


def check_fraction(value, what: str) -> float:
    """A zero fraction in [0, 1), or a ValueError naming the parameter."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"The '{what}' parameter must be a number. Got {value!r}.") from None
    if not (0.0 <= value < 1.0):
        raise ValueError(f"The '{what}' parameter must be in [0, 1). Got {value}.")
    return value


def _layers(model_or_layers, include=None, exclude=None) -> list[tuple[str, int]]:
    if isinstance(model_or_layers, nn.Module):
        return [(n, m.weight.numel())
                for n, m in penalised_layers(model_or_layers, include, exclude)]
    return [(str(n), int(t)) for n, t in model_or_layers]


def make_target(
    model: nn.Module | Sequence[tuple[str, int]],
    *,
    nnz: int | None = None,
    zero_fraction: float | None = None,
    layer_nnz: Sequence[int] | Mapping[str, int] | None = None,
    layer_zero_fraction: Sequence[float] | Mapping[str, float] | None = None,
    tol: float | None = None,
    include=None,
    exclude=None,
) -> Target:
    """Build a :class:`Target` from exactly one of the four ways of stating it.

    Parameters
    ----------
    model : nn.Module, or sequence of (layer name, number of weights)
        The network (its penalised layers), or the layers themselves.
    nnz : int
        Global number of nonzero weights (the paper's sparsity level), in ``[0, total]``.
    zero_fraction : float
        Global share of zero weights, in ``[0, 1)`` ("0.9" = 90 % zeros).
    layer_nnz, layer_zero_fraction : sequence, or mapping from layer name
        One target per penalised tensor (a mapping must name every tensor).
    include, exclude : patterns, optional
        With a model: which tensors are penalised (:func:`~l1sparse.tensors.select_tensors`).
    tol : float, optional
        In the unit of the target: a count for ``nnz``, a fraction for ``zero_fraction``.
        Default: 0 for counts (exactly the count asked for), 0.005 for fractions. A per-layer
        tolerance is never less than one weight.

    Raises
    ------
    ValueError
        If not exactly one target is given, or a value or the tolerance is out of range, or a
        per-layer target has the wrong length or names an unknown layer.

    >>> from l1sparse.models import mlp
    >>> make_target(mlp(4, [8], 2), layer_zero_fraction={"fc1": 0.5, "fc2": 0.75}).words()
    'fc1: 50 % zeros ± 0.5 pp, fc2: 75 % zeros ± 0.5 pp'
    """
    given = {k: v for k, v in dict(nnz=nnz, zero_fraction=zero_fraction, layer_nnz=layer_nnz,
                                   layer_zero_fraction=layer_zero_fraction).items()
             if v is not None}
    if len(given) != 1:
        raise ValueError("Give exactly one target: 'nnz', 'zero_fraction', 'layer_nnz' or "
                         f"'layer_zero_fraction'. Got {sorted(given) or 'none'}.")
    (name, value), = given.items()
    layers = _layers(model, include, exclude)
    if not layers:
        raise ValueError("The model has no penalisable layer (nn.Linear or nn.Conv*).")
    total = sum(t for _, t in layers)
    kind = "nnz" if name.endswith("nnz") else "zero_fraction"
    if tol is None:
        tol = DEFAULT_FRACTION_TOL if kind == "zero_fraction" else 0.0
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"The 'tol' parameter must be a number. Got {tol!r}.") from None
    if not math.isfinite(tol) or tol < 0 or (kind == "zero_fraction" and tol >= 1):
        bound = "[0, 1) (a fraction)" if kind == "zero_fraction" else ">= 0 (a count)"
        raise ValueError(f"The 'tol' parameter must be {bound}. Got {tol}.")

    def count(v, what: str, cap: int) -> float:
        if kind == "zero_fraction":
            return (1.0 - check_fraction(v, what)) * cap
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"The '{what}' parameter must be an integer. Got {v!r}.") from None
        if not math.isfinite(fv) or fv != int(fv) or not 0 <= fv <= cap:
            raise ValueError(f"The '{what}' parameter must be an integer in [0, {cap}]. Got {v!r}.")
        return fv

    if name.startswith("layer_"):
        names = [n for n, _ in layers]
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in names]
            missing = [n for n in names if n not in value]
            if unknown or missing:
                raise ValueError(
                    f"The '{name}' parameter must give one value for each penalised layer "
                    f"{names}" + (f"; unknown: {unknown}" if unknown else "")
                    + (f"; missing: {missing}" if missing else "") + ".")
            value = [value[n] for n in names]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"The '{name}' parameter must be a list or a mapping. Got {value!r}.")
        if len(value) != len(layers):
            raise ValueError(
                f"The '{name}' parameter must have one value per penalised layer "
                f"({len(layers)}: {names}). Got {len(value)} values.")
        scopes = tuple(
            Scope((n,), t, count(v, f"{name}[{n!r}]", t),
                  tol if kind == "nnz" else max(1.0, tol * t))
            for (n, t), v in zip(layers, value))
        echo = tuple(float(v) for v in value)
    else:
        scopes = (Scope(tuple(n for n, _ in layers), total, count(value, name, total),
                        tol if kind == "nnz" else tol * total),)
        echo = float(value)
    return Target(kind, echo, tol, scopes)
