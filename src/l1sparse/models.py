"""Network builders whose architecture can be written down and rebuilt.

The layers of :class:`MLP` are named ``fc1, fc2, …`` so that per-layer λ_k and per-layer targets
can be addressed by name as well as by index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "mlp", "build_model"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


class MLP(nn.Sequential):
    """Fully connected network ``W_D σ(… σ(W_1 x + b_1) …) + b_D``.

    Parameters
    ----------
    in_features : int
        Input dimension. Inputs with more dimensions (images) are flattened.
    hidden : sequence of int
        Hidden widths; empty for a linear model (the convex case).
    out_features : int
        Output dimension (number of classes for classification).
    activation : str, default "relu"
        One of :data:`ACTIVATIONS`.

    Examples
    --------
    >>> net = MLP(784, [300, 100], 10)
    >>> [name for name, _ in net.named_children()]
    ['flatten', 'fc1', 'act1', 'fc2', 'act2', 'fc3']
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
    ) -> None:
        hidden = [int(h) for h in hidden]
        for what, value in (("in_features", in_features), ("out_features", out_features)):
            if int(value) < 1:
                raise ValueError(f"The '{what}' parameter must be a positive integer. Got {value}.")
        if any(h < 1 for h in hidden):
            raise ValueError(f"The 'hidden' widths must be positive integers. Got {hidden}.")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"The 'activation' parameter must be one of {sorted(ACTIVATIONS)}. "
                f"Got {activation!r}."
            )
        widths = [int(in_features), *hidden, int(out_features)]
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for k in range(len(widths) - 1):
            layers[f"fc{k + 1}"] = nn.Linear(widths[k], widths[k + 1])
            if k < len(widths) - 2:
                layers[f"act{k + 1}"] = ACTIVATIONS[activation]()
        super().__init__(layers)
        self.in_features = int(in_features)
        self.hidden = hidden
        self.out_features = int(out_features)
        self.activation = activation

    @property
    def config(self) -> dict[str, Any]:
        """Everything :func:`build_model` needs to rebuild this architecture."""
        return {
            "kind": "mlp",
            "in_features": self.in_features,
            "hidden": list(self.hidden),
            "out_features": self.out_features,
            "activation": self.activation,
        }


def mlp(
    in_features: int, hidden: Sequence[int], out_features: int, *, activation: str = "relu",
    seed: int | None = None,
) -> MLP:
    """Build an :class:`MLP`, its initial weights drawn from ``seed`` when given."""
    if seed is None:
        return MLP(in_features, hidden, out_features, activation=activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(in_features, hidden, out_features, activation=activation)


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``config`` (as stored in a model file's metadata)."""
    kind = config.get("kind")
    if kind != "mlp":
        raise ValueError(f"Unknown model kind {kind!r} in the model config; expected 'mlp'.")
    return MLP(
        config["in_features"], config["hidden"], config["out_features"],
        activation=config.get("activation", "relu"),
    )
