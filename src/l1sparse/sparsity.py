"""Counting exact zeros: nnz, total and zero fraction per penalised layer and overall.

The paper's sparsity level SL(W) is the number of nonzero entries (``nnz``); the deep-learning
convention is the zero fraction ``1 − nnz/total`` ("90 % sparse"). Both are reported, each under
its own name. Zeros are exact zeros: no threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .penalty import penalised_layers

__all__ = ["LayerSparsity", "SparsityReport", "sparsity", "nnz_per_layer"]


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: tuple[int, ...]
    nnz: int
    total: int

    @property
    def zero_fraction(self) -> float:
        return 1.0 - self.nnz / self.total

    def as_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "zero_fraction": self.zero_fraction}


@dataclass(frozen=True)
class SparsityReport:
    layers: tuple[LayerSparsity, ...]

    @property
    def nnz(self) -> int:
        return sum(layer.nnz for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def zero_fraction(self) -> float:
        return 1.0 - self.nnz / self.total

    def __getitem__(self, name: str) -> LayerSparsity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def as_dict(self) -> dict:
        return {
            "nnz": self.nnz, "total": self.total, "zero_fraction": self.zero_fraction,
            "layers": [layer.as_dict() for layer in self.layers],
        }

    def table(self) -> str:
        """A plain-text table, one row per layer and a total row."""
        rows = [f"{'layer':<12}{'shape':>16}{'nnz':>10}{'total':>10}{'zero frac':>11}"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.shape))
            rows.append(f"{layer.name:<12}{shape:>16}{layer.nnz:>10}{layer.total:>10}"
                        f"{layer.zero_fraction:>11.4f}")
        rows.append(f"{'all':<12}{'':>16}{self.nnz:>10}{self.total:>10}{self.zero_fraction:>11.4f}")
        return "\n".join(rows)


def nnz_per_layer(model: nn.Module) -> dict[str, int]:
    """Number of exactly nonzero weights in every penalised layer."""
    with torch.no_grad():
        return {name: int(torch.count_nonzero(m.weight)) for name, m in penalised_layers(model)}


def sparsity(model: nn.Module) -> SparsityReport:
    """Per-layer and overall sparsity of the penalised weights of ``model``.

    >>> from l1sparse.models import mlp
    >>> net = mlp(3, [], 2)
    >>> _ = torch.nn.init.zeros_(net.fc1.weight)
    >>> sparsity(net).zero_fraction
    1.0
    """
    with torch.no_grad():
        return SparsityReport(tuple(
            LayerSparsity(name, tuple(m.weight.shape), int(torch.count_nonzero(m.weight)),
                          m.weight.numel())
            for name, m in penalised_layers(model)
        ))
