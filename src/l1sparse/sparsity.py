"""Counting exact zeros: nnz, total and zero fraction per penalised layer and overall.

The paper's sparsity level SL(W) is the number of nonzero entries (``nnz``); the deep-learning
convention is the zero fraction ``1 − nnz/total`` ("90 % sparse"). Both are reported, each under
its own name. Zeros are exact zeros: no threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .penalty import penalised_layers
from .tensors import select_tensors, unpenalised_weights

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
    """Sparsity of the penalised tensors; ``outside_nnz``/``outside_total`` count every other
    parameter (biases, norms, embeddings), so "90 % zeros" is never read as the whole
    model's when it is not."""

    layers: tuple[LayerSparsity, ...]
    outside_nnz: int = field(default=0)
    outside_total: int = field(default=0)

    @property
    def model_zero_fraction(self) -> float:
        """Zeros over every parameter of the model, penalised or not."""
        total = self.total + self.outside_total
        return 1.0 - (self.nnz + self.outside_nnz) / total if total else 0.0

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
            "outside_nnz": self.outside_nnz, "outside_total": self.outside_total,
            "model_zero_fraction": self.model_zero_fraction,
        }

    def table(self) -> str:
        """A plain-text table, one row per layer and a total row."""
        w = max([12, *(len(layer.name) + 2 for layer in self.layers)])
        rows = [f"{'layer':<{w}}{'shape':>16}{'nnz':>10}{'total':>10}{'zero frac':>11}"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.shape))
            rows.append(f"{layer.name:<{w}}{shape:>16}{layer.nnz:>10}{layer.total:>10}"
                        f"{layer.zero_fraction:>11.4f}")
        rows.append(f"{'all':<{w}}{'':>16}{self.nnz:>10}{self.total:>10}"
                    f"{self.zero_fraction:>11.4f}")
        if self.outside_total:
            outside = 1.0 - self.outside_nnz / self.outside_total
            rows.append(f"{'unpenalised':<{w}}{'':>16}{self.outside_nnz:>10}"
                        f"{self.outside_total:>10}{outside:>11.4f}")
            rows.append(f"{'model':<{w}}{'':>16}{self.nnz + self.outside_nnz:>10}"
                        f"{self.total + self.outside_total:>10}{self.model_zero_fraction:>11.4f}")
        return "\n".join(rows)


def nnz_per_layer(model: nn.Module, include=None, exclude=None) -> dict[str, int]:
    """Number of exactly nonzero weights in every penalised tensor."""
    with torch.no_grad():
        return {name: int(torch.count_nonzero(m.weight))
                for name, m in penalised_layers(model, include, exclude)}


def sparsity(model: nn.Module, include=None, exclude=None) -> SparsityReport:
    """Per-tensor and overall sparsity of the penalised tensors of ``model`` (chosen as in
    :func:`~l1sparse.tensors.select_tensors`), and the count over every other parameter.

    >>> from l1sparse.models import mlp
    >>> net = mlp(3, [], 2)
    >>> _ = torch.nn.init.zeros_(net.fc1.weight)
    >>> sparsity(net).zero_fraction
    1.0
    """
    tensors = select_tensors(model, include, exclude, warn=False)
    outside_nnz, outside_total = unpenalised_weights(model, tensors)
    with torch.no_grad():
        return SparsityReport(tuple(
            LayerSparsity(t.name, t.shape, int(torch.count_nonzero(t.param)), t.numel())
            for t in tensors), outside_nnz, outside_total)
