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

__all__ = ["ACTIVATIONS", "MLP", "mlp", "build_model", "paper_mlp", "paper_cnn",
           "ResNetSmall", "resnet_small", "ViTSmall", "vit_small"]

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
    if kind in ("resnet_small", "vit_small"):  # the zoo: every other key is a keyword
        options = {k: v for k, v in config.items() if k not in ("kind", "n_classes")}
        cls = ResNetSmall if kind == "resnet_small" else ViTSmall
        return cls(config["n_classes"], **options)
    if kind != "mlp":
        raise ValueError(f"Unknown model kind {kind!r} in the model config; expected 'mlp', "
                         "'resnet_small' or 'vit_small'.")
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


# --------------------------------------------------------------------------- the model zoo


def _image(x: torch.Tensor, channels: int, side: int) -> torch.Tensor:
    """Flattened images ``(N, C·side²)`` as ``(N, C, side, side)``; 4-D inputs as they are."""
    return x.view(-1, channels, side, side) if x.dim() == 2 else x


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, as in He et al. (2016).

    ``conv1``'s output channels are internal to the block (removable by
    :func:`~l1sparse.compact.compact_model` when dead); ``conv2``'s join the residual stream.
    The shortcut is a 1×1 convolution with BatchNorm when the shape changes, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A residual CNN with BatchNorm for 28×28 images: a 3×3 stem, three stages of
    :class:`BasicBlock` (``width``, ``2·width``, ``4·width`` channels; strides 1, 2, 2), global
    average pooling and a linear classifier ``fc``.

    Penalised by default: every convolution (stem, blocks, 1×1 shortcuts) and ``fc``; the
    BatchNorm weights and biases are not. Inputs ``(N, C·28·28)`` are reshaped to images.
    """

    def __init__(self, n_classes: int = 10, *, width: int = 20, blocks: Sequence[int] = (2, 2, 2),
                 in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        blocks = [int(b) for b in blocks]
        if int(width) < 1 or not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"ResNetSmall needs a positive width and block counts. Got "
                             f"width={width}, blocks={blocks}.")
        self.n_classes, self.width, self.blocks = int(n_classes), int(width), blocks
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, channels = [], width
        for k, n in enumerate(blocks):
            out = width * 2 ** k
            stages.append(nn.Sequential(*(BasicBlock(channels if i == 0 else out, out,
                                                     2 if (k > 0 and i == 0) else 1)
                                          for i in range(n))))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(_image(x, self.in_channels, self.image_size))))
        return self.fc(self.pool(self.stages(x)).flatten(1))

    @property
    def config(self) -> dict[str, Any]:
        """Everything :func:`build_model` needs to rebuild this architecture."""
        return {"kind": "resnet_small", "n_classes": self.n_classes, "width": self.width,
                "blocks": list(self.blocks), "in_channels": self.in_channels,
                "image_size": self.image_size}


class ViTSmall(nn.Module):
    """A small Vision Transformer: a patch embedding (a ``patch``-strided convolution), a learned
    position table, :class:`torch.nn.TransformerEncoder` (pre-norm layers of multi-head
    self-attention + LayerNorm + a GELU feed-forward block), mean pooling over the tokens, a
    LayerNorm and a linear classifier ``head``.

    Penalised by default: ``patch_embed``, each layer's ``self_attn.in_proj_weight`` (q, k and
    v rows), ``self_attn.out_proj``, ``linear1``, ``linear2``, and ``head``; the LayerNorms,
    biases and the position table ``pos_embedding`` are not (the last is named in the warning
    :func:`~l1sparse.tensors.select_tensors` gives).
    """

    def __init__(self, n_classes: int = 10, *, dim: int = 64, depth: int = 5, heads: int = 4,
                 mlp_dim: int = 256, patch: int = 4, in_channels: int = 1, image_size: int = 28,
                 activation: str = "gelu") -> None:
        super().__init__()
        if image_size % patch or dim % heads or min(dim, depth, heads, mlp_dim, patch) < 1:
            raise ValueError(
                f"ViTSmall needs patch to divide image_size and heads to divide dim. Got "
                f"image_size={image_size}, patch={patch}, dim={dim}, heads={heads}.")
        if activation not in ("gelu", "relu"):
            raise ValueError(f"The 'activation' parameter must be 'gelu' or 'relu'. "
                             f"Got {activation!r}.")
        self.n_classes, self.dim, self.depth, self.heads = int(n_classes), dim, depth, heads
        self.mlp_dim, self.patch, self.in_channels = mlp_dim, patch, in_channels
        self.image_size, self.activation = image_size, activation
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0,
                                           activation=activation, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(_image(x, self.in_channels, self.image_size))
        x = self.encoder(x.flatten(2).transpose(1, 2) + self.pos_embedding)
        return self.head(self.norm(x.mean(dim=1)))

    @property
    def config(self) -> dict[str, Any]:
        """Everything :func:`build_model` needs to rebuild this architecture."""
        return {"kind": "vit_small", "n_classes": self.n_classes, "dim": self.dim,
                "depth": self.depth, "heads": self.heads, "mlp_dim": self.mlp_dim,
                "patch": self.patch, "in_channels": self.in_channels,
                "image_size": self.image_size, "activation": self.activation}


def _seeded(build, seed: int | None):
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def resnet_small(n_classes: int = 10, *, width: int = 20, blocks: Sequence[int] = (2, 2, 2),
                 in_channels: int = 1, seed: int | None = None) -> ResNetSmall:
    """A :class:`ResNetSmall` for 28×28 images, its weights drawn from ``seed`` when given.

    At the default ``width=20`` it has 271,380 penalised weights; ``width`` scales them by
    about ``(width/20)²`` (``width=4`` for a test that runs in seconds).

    >>> net = resnet_small(seed=0)
    >>> sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    271380
    >>> net(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """
    return _seeded(lambda: ResNetSmall(n_classes, width=width, blocks=blocks,
                                       in_channels=in_channels), seed)


def vit_small(n_classes: int = 10, *, dim: int = 64, depth: int = 5, heads: int = 4,
              mlp_dim: int = 256, patch: int = 4, in_channels: int = 1,
              activation: str = "gelu", seed: int | None = None) -> ViTSmall:
    """A :class:`ViTSmall` for 28×28 images (7×7 patches of 4×4 pixels), its weights drawn
    from ``seed`` when given.

    At the default size it has 247,424 penalised weights; ``dim``, ``depth`` and ``mlp_dim``
    shrink it (``dim=16, depth=1, heads=2, mlp_dim=32`` for a test).

    >>> net = vit_small(seed=0)
    >>> from l1sparse.tensors import select_tensors
    >>> sum(t.numel() for t in select_tensors(net, warn=False))
    247424
    >>> net(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """
    return _seeded(lambda: ViTSmall(n_classes, dim=dim, depth=depth, heads=heads,
                                    mlp_dim=mlp_dim, patch=patch, in_channels=in_channels,
                                    activation=activation), seed)
