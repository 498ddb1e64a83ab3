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

__all__ = ["ACTIVATIONS", "MLP", "mlp", "build_model", "paper_mlp", "paper_cnn"]

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


# --------------------------------------------------------------------------- the paper's networks


def paper_mlp(*, seed: int | None = None) -> MLP:
    """The paper's regression network (Mackey–Glass): a ReLU MLP 6-128-128-64-1.

    Penalised: the 4 weight matrices ``fc1`` … ``fc4`` (768 / 16,384 / 8,192 / 64 = 25,408
    weights); PyTorch's default initialisation, drawn from ``seed`` when given.

    >>> sum(m.weight.numel() for m in paper_mlp(seed=0).modules() if isinstance(m, nn.Linear))
    25408
    """
    return mlp(6, [128, 128, 64], 1, activation="relu", seed=seed)


class PaperCNN(nn.Module):
    """The paper's classification network for 28×28 images: three 3×3 convolutions (32, 64,
    128 channels, padding 1), each followed by ReLU and 2×2 max-pooling (28 → 14 → 7 → 3), then
    ``Linear(1152, 512)`` + ReLU and ``Linear(512, 10)``.

    Penalised: the 5 weights ``conv1`` … ``conv3``, ``fc1``, ``fc2`` (288 / 18,432 / 73,728 /
    589,824 / 5,120 = 687,392); biases are not. Inputs of shape ``(N, 784)`` are reshaped to
    ``(N, 1, 28, 28)``.
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(128 * 3 * 3, 512)
        self.fc2 = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(-1, 1, 28, 28)
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.pool(self.act(conv(x)))
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def paper_cnn(*, n_classes: int = 10, seed: int | None = None) -> PaperCNN:
    """Build the paper's :class:`PaperCNN`, its initial weights drawn from ``seed`` when given.

    >>> net = paper_cnn(seed=0)
    >>> sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    687392
    >>> net(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """
    if seed is None:
        return PaperCNN(n_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PaperCNN(n_classes)
