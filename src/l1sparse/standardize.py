"""Standardised training, raw-scale models: feature (and target) statistics folded into an MLP.

Training on standardised data, ``x' = (x − μ_x) / s_x`` and (regression) ``y' = (y − μ_y) / s_y``,
makes λ and the learning rate less sensitive to the units of the data. The trained network then
expects standardised inputs and predicts standardised targets. :meth:`Standardization.fold`
rewrites its first and last layers so that it takes raw inputs and predicts raw targets::

    W_1 x' + b_1 = (W_1 / s_x) x + (b_1 − (W_1 / s_x) μ_x)
    y = s_y (W_D h + b_D) + μ_y = (s_y W_D) h + (s_y b_D + μ_y)

Both are column or row scalings of a weight matrix, so every zero stays a zero and the sparsity
pattern is unchanged; the ℓ1 penalty (and so λ) belongs to the standardised problem.
:meth:`Standardization.unfold` is the inverse, for checks that need the standardised network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Standardization"]


def _linears(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("The 'model' parameter has no nn.Linear layer to fold the "
                         "standardisation into.")
    return layers[0], layers[-1]


@dataclass(frozen=True)
class Standardization:
    """Per-feature (and per-output) mean and scale of the training data.

    Attributes
    ----------
    x_mean, x_scale : Tensor
        Shape ``(features,)``, float64, over the flattened trailing dimensions of ``X``. A
        constant feature gets scale 1.
    y_mean, y_scale : Tensor or None
        Shape ``(outputs,)`` for a standardised regression target; ``None`` otherwise.
    """

    x_mean: Tensor
    x_scale: Tensor
    y_mean: Tensor | None = None
    y_scale: Tensor | None = None

    @classmethod
    def from_data(cls, X: Tensor, y: Tensor | None = None) -> "Standardization":
        """Statistics of the training inputs ``X`` and, when given, regression targets ``y``."""
        x = X.reshape(X.shape[0], -1).double()
        mean, scale = x.mean(0), x.std(0, unbiased=False)
        ym = ys = None
        if y is not None:
            t = y.reshape(y.shape[0], -1).double()
            ym, ys = t.mean(0), t.std(0, unbiased=False)
            ys = torch.where(ys > 0, ys, torch.ones_like(ys))
        return cls(mean, torch.where(scale > 0, scale, torch.ones_like(scale)), ym, ys)

    @property
    def target(self) -> bool:
        return self.y_mean is not None

    def transform_X(self, X: Tensor) -> Tensor:
        flat = (X.reshape(X.shape[0], -1).double() - self.x_mean) / self.x_scale
        return flat.to(X.dtype).reshape(X.shape)

    def transform_y(self, y: Tensor) -> Tensor:
        if not self.target:
            return y
        flat = (y.reshape(y.shape[0], -1).double() - self.y_mean) / self.y_scale
        return flat.to(y.dtype).reshape(y.shape)

    @torch.no_grad()
    def fold(self, model: nn.Module) -> nn.Module:
        """Rewrite ``model`` in place to take raw inputs (and predict raw targets); return it."""
        first, last = _linears(model)
        W = first.weight.double()
        if W.shape[1] != self.x_mean.numel():
            raise ValueError(f"The model's first layer takes {W.shape[1]} inputs; the "
                             f"standardisation has {self.x_mean.numel()} features.")
        Wn = W / self.x_scale.to(W.device)
        if first.bias is not None:
            first.bias.copy_(first.bias.double() - Wn @ self.x_mean.to(W.device))
        first.weight.copy_(Wn)
        if self.target:
            s, m = self.y_scale.to(W.device), self.y_mean.to(W.device)
            last.weight.copy_(last.weight.double() * s[:, None])
            if last.bias is not None:
                last.bias.copy_(last.bias.double() * s + m)
        return model

    @torch.no_grad()
    def unfold(self, model: nn.Module) -> nn.Module:
        """The inverse of :meth:`fold`, in place: the network of the standardised problem."""
        first, last = _linears(model)
        if self.target:
            s, m = self.y_scale.to(last.weight.device), self.y_mean.to(last.weight.device)
            if last.bias is not None:
                last.bias.copy_((last.bias.double() - m) / s)
            last.weight.copy_(last.weight.double() / s[:, None])
        Wn = first.weight.double()
        if first.bias is not None:
            first.bias.copy_(first.bias.double() + Wn @ self.x_mean.to(Wn.device))
        first.weight.copy_(Wn * self.x_scale.to(Wn.device))
        return model

    def as_metadata(self) -> dict:
        """JSON-ready statistics, for a model file's metadata."""
        out = {"features": {"mean": self.x_mean.tolist(), "scale": self.x_scale.tolist()},
               "target": None, "folded": True}
        if self.target:
            out["target"] = {"mean": self.y_mean.tolist(), "scale": self.y_scale.tolist()}
        return out

    @classmethod
    def from_metadata(cls, meta: dict) -> "Standardization":
        """The inverse of :meth:`as_metadata`; ValueError if the entry is malformed."""
        try:
            f = meta["features"]
            t = meta.get("target")
            stats = [torch.tensor(f["mean"], dtype=torch.float64),
                     torch.tensor(f["scale"], dtype=torch.float64)]
            if t is not None:
                stats += [torch.tensor(t["mean"], dtype=torch.float64),
                          torch.tensor(t["scale"], dtype=torch.float64)]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed 'standardize' metadata: {exc}") from None
        return cls(*stats)
