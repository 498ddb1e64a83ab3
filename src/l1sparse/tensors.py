"""Which tensors the ℓ1 term penalises: one resolver, decided once, passed on as a value.

The default set is decided by what a tensor is, not by a list of layer classes: every
trainable parameter with two or more dimensions that is a *weight* of the module holding it
(``weight``, ``*_weight``, ``weight_*``), in any module type — ``nn.Linear``, convolutions and
their transposes, ``nn.MultiheadAttention``'s ``in_proj_weight``, ``nn.LSTM``'s
``weight_ih_l0``, a model library's own layer class — except

* embeddings (``nn.Embedding``/``nn.EmbeddingBag``): in the set only when a pattern names them;
  a tensor tied to an embedding (a language model's output head) counts as an embedding;
* normalisation layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm, ... and any module class
  whose name ends in ``Norm``);
* biases and every other 1-D tensor, which are never penalised.

``include`` replaces the default set; ``exclude`` is applied last. Each is a pattern or a list
of patterns: a shell-style string (``*`` and ``?``, :mod:`fnmatch`) matched against every
name of a tensor (its ``named_parameters()`` names, tied ones included, and its short name),
or an ``nn.Module`` subclass (every weight of modules of that type). A parameter shared
between modules is one tensor: counted and thresholded once, found by identity.

A tensor's **key** is its first ``named_parameters()`` name; its **name** — what is printed,
written to result files and used for per-layer targets — is the module's name when the tensor
is the only penalised tensor of its module and is called ``weight`` (``fc1``), else the key
(``layers.0.self_attn.in_proj_weight``). Both are accepted wherever a tensor is named.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["PenalisedTensor", "select_tensors", "tensor_names", "resolve_name", "describe",
           "unpenalised_weights", "NORM_TYPES", "EMBEDDING_TYPES"]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)

# what a unit is, per module type: (axis of output units, axis of input units, words)
_UNITS: list[tuple[type[nn.Module], tuple[int, int], str]] = [
    (nn.modules.conv._ConvTransposeNd, (1, 0), "output channel (axis 1), input channel (axis 0)"),
    (nn.modules.conv._ConvNd, (0, 1), "output channel, input channel"),
    (nn.Linear, (0, 1), "output unit (row), input unit (column)"),
    (nn.MultiheadAttention, (0, 1), "q/k/v projection row, embedding column"),
    (nn.modules.rnn.RNNBase, (0, 1), "gate row, input column"),
    (nn.Bilinear, (0, 1), "output unit, first input"),
]

Pattern = "str | type[nn.Module]"


@dataclass(frozen=True, eq=False)
class PenalisedTensor:
    """One penalised tensor: its names, the parameter, and the module holding it.

    ``weight`` is the parameter itself, so that code written for layers (``m.weight``) reads
    any penalised tensor.
    """

    name: str
    key: str
    param: nn.Parameter = field(repr=False)
    module: nn.Module = field(repr=False)
    module_name: str
    attr: str
    aliases: tuple[str, ...] = ()
    unit_axes: tuple[int, int] | None = None
    units: str = "rows and columns of the tensor (module type unknown to l1sparse)"

    @property
    def weight(self) -> nn.Parameter:
        return self.param

    @property
    def bias(self) -> torch.Tensor | None:
        """The module's ``bias`` when this tensor is its ``weight`` (a layer's own pair)."""
        return getattr(self.module, "bias", None) if self.attr == "weight" else None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.param.shape)

    def numel(self) -> int:
        return self.param.numel()


def _is_weight_name(attr: str) -> bool:
    return attr == "weight" or attr.endswith("_weight") or attr.startswith("weight_")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith("Norm")


def _units(module: nn.Module) -> tuple[tuple[int, int] | None, str]:
    for kind, axes, words in _UNITS:
        if isinstance(module, kind):
            return axes, words
    return None, "rows and columns of the tensor (module type unknown to l1sparse)"


def _as_list(patterns) -> list:
    if patterns is None:
        return []
    if isinstance(patterns, (str, type)):
        return [patterns]
    if isinstance(patterns, Iterable):
        return list(patterns)
    raise ValueError(f"A tensor pattern must be a string, an nn.Module type or a list of them. "
                     f"Got {patterns!r}.")


@dataclass
class _Candidate:
    param: nn.Parameter
    holders: list[tuple[str, nn.Module, str]]  # (module name, module, attribute name)
    names: list[str]  # every named_parameters() name, first is the key


def _candidates(model: nn.Module) -> list[_Candidate]:
    """Every parameter of the model, once, with every module and name that holds it."""
    by_id: dict[int, _Candidate] = {}
    order: list[int] = []
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False, remove_duplicate=False):
            full = f"{module_name}.{attr}" if module_name else attr
            c = by_id.get(id(p))
            if c is None:
                c = by_id[id(p)] = _Candidate(p, [], [])
                order.append(id(p))
            if full not in c.names:
                c.names.append(full)
                c.holders.append((module_name, module, attr))
    # the key is the first name named_parameters() gives
    first = {id(p): n for n, p in model.named_parameters()}
    out = []
    for i in order:
        c = by_id[i]
        if i in first and first[i] in c.names:
            k = c.names.index(first[i])
            c.names.insert(0, c.names.pop(k))
            c.holders.insert(0, c.holders.pop(k))
        out.append(c)
    return out


def _default_member(c: _Candidate) -> bool:
    """The default rule: a ≥2-D trainable weight of a module that is not an embedding or a
    normalisation layer (a tensor tied to an embedding counts as one)."""
    p = c.param
    if p.dim() < 2 or not p.requires_grad:
        return False
    if any(isinstance(m, EMBEDDING_TYPES) or _is_norm(m) for _, m, _ in c.holders):
        return False
    return any(_is_weight_name(attr) for _, _, attr in c.holders)


def _eligible(c: _Candidate) -> bool:
    """What a pattern may bring in: any ≥2-D tensor that is not a norm layer's (embeddings
    included); biases and 1-D tensors never."""
    return c.param.dim() >= 2 and not any(_is_norm(m) for _, m, _ in c.holders)


def _matches(c: _Candidate, pattern, short: str) -> bool:
    if isinstance(pattern, type):
        return any(isinstance(m, pattern) for _, m, _ in c.holders)
    if not isinstance(pattern, str):
        raise ValueError(f"A tensor pattern must be a string or an nn.Module type. "
                         f"Got {pattern!r}.")
    return any(fnmatch.fnmatchcase(n, pattern) for n in (*c.names, short))


def _short_names(cands: list[_Candidate], members: list[_Candidate]) -> dict[int, str]:
    """The printed name of each member: the module name for a module's only penalised
    tensor called ``weight``, else the key."""
    per_module: dict[int, int] = {}
    for c in members:
        mod = c.holders[0][1]
        per_module[id(mod)] = per_module.get(id(mod), 0) + 1
    out = {}
    for c in members:
        module_name, mod, attr = c.holders[0]
        alone = per_module[id(mod)] == 1 and attr == "weight" and module_name
        out[id(c.param)] = module_name if alone else c.names[0]
    return out


def _tensor_desc(c: _Candidate) -> str:
    return f"{c.names[0]} {tuple(c.param.shape)}"


def select_tensors(model: nn.Module, include=None, exclude=None, *,
                   warn: bool = True) -> list[PenalisedTensor]:
    """Resolve the penalised tensors of ``model`` once, in ``named_parameters()`` order.

    Parameters
    ----------
    model : nn.Module
    include : str, nn.Module type, or a list of them, optional
        Replaces the default set (module docstring): the ≥2-D tensors any pattern matches.
        Embeddings count only when a pattern names them; biases and 1-D tensors never.
    exclude : same, optional
        Removed from the set, last.
    warn : bool, default True
        With the default set, name in one warning the trainable ≥2-D tensors it leaves out
        (embeddings, a model's own position tables, ...), so that a share of zeros over the
        set is never read as the whole model's.

    Returns
    -------
    list of PenalisedTensor

    Raises
    ------
    ValueError
        If a pattern matches no tensor, or only biases or normalisation weights (the message
        names the pattern and lists the candidates), or the set ends up empty.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    >>> [t.name for t in select_tensors(net)]
    ['0', '2']
    >>> [t.name for t in select_tensors(net, exclude="2")]
    ['0']
    >>> attn = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    >>> [t.name for t in select_tensors(attn)]
    ['self_attn.in_proj_weight', 'self_attn.out_proj', 'linear1', 'linear2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter must be an nn.Module. Got {type(model).__name__}.")
    cands = _candidates(model)
    incl, excl = _as_list(include), _as_list(exclude)
    default = [c for c in cands if _default_member(c)]
    eligible = [c for c in cands if _eligible(c)]
    # a pattern may name a tensor by its short name, embeddings included ("embed")
    provisional = _short_names(cands, eligible)

    def short(c: _Candidate) -> str:
        return provisional.get(id(c.param), c.names[0])

    listing = ", ".join(_tensor_desc(c) for c in eligible) or "none"

    def matched(pattern, where: str) -> list[_Candidate]:
        hits = [c for c in cands if _matches(c, pattern, short(c))]
        good = [c for c in hits if _eligible(c)]
        if not good:
            what = ("only biases or normalisation weights" if hits else "no tensor")
            raise ValueError(f"The '{where}' pattern {pattern!r} matches {what}; the tensors "
                             f"that can be penalised are: {listing}.")
        frozen = [c for c in good if not c.param.requires_grad]
        if frozen and where == "include":
            warnings.warn(f"The 'include' pattern {pattern!r} names frozen parameters "
                          f"(requires_grad=False), left out: "
                          f"{', '.join(c.names[0] for c in frozen)}.", stacklevel=3)
        return [c for c in good if c.param.requires_grad]

    if incl:
        chosen_ids = set()
        for pattern in incl:
            chosen_ids.update(id(c.param) for c in matched(pattern, "include"))
        members = [c for c in cands if id(c.param) in chosen_ids]
    else:
        members = list(default)
        if warn:
            left = [c for c in cands if c.param.requires_grad and c.param.dim() >= 2
                    and not _default_member(c) and not any(_is_norm(m) for _, m, _ in c.holders)]
            if left:
                warnings.warn(
                    "l1sparse leaves these trainable tensors unpenalised by default: "
                    + ", ".join(_tensor_desc(c) for c in left)
                    + " (name them in include=... to penalise them).", stacklevel=2)
    for pattern in excl:
        drop = {id(c.param) for c in matched(pattern, "exclude")}
        members = [c for c in members if id(c.param) not in drop]
    if not members:
        raise ValueError(f"The model has no penalisable tensor (include={include!r}, "
                         f"exclude={exclude!r}); the tensors that can be penalised are: "
                         f"{listing}.")
    names = _short_names(cands, members)
    out = []
    for c in members:
        module_name, module, attr = c.holders[0]
        axes, words = _units(module)
        out.append(PenalisedTensor(name=names[id(c.param)], key=c.names[0], param=c.param,
                                   module=module, module_name=module_name, attr=attr,
                                   aliases=tuple(c.names), unit_axes=axes, units=words))
    return out


def tensor_names(model: nn.Module, include=None, exclude=None) -> list[str]:
    """The names of :func:`select_tensors`, in order."""
    return [t.name for t in select_tensors(model, include, exclude, warn=False)]


def resolve_name(tensors: Sequence[PenalisedTensor], name: str) -> str:
    """The printed name of the tensor called ``name`` (its name, key or any alias).

    Raises
    ------
    ValueError
        If no tensor of the set has that name (the message lists the set).
    """
    for t in tensors:
        if name == t.name or name in t.aliases:
            return t.name
    raise ValueError(f"{name!r} is not one of the penalised tensors; the set is "
                     f"{[t.name for t in tensors]}.")


def describe(tensors: Sequence[PenalisedTensor]) -> str:
    """One line per tensor (name, shape, size, what a unit is): the set printed once at the
    start of a run."""
    total = sum(t.numel() for t in tensors)
    rows = [f"penalised tensors ({len(tensors)}, {total:,} weights):"]
    for t in tensors:
        rows.append(f"  {t.name:<40} {'x'.join(map(str, t.shape)):>16} {t.numel():>10,}  "
                    f"{type(t.module).__name__}")
    return "\n".join(rows)


@torch.no_grad()
def unpenalised_weights(model: nn.Module, tensors: Sequence[PenalisedTensor]) -> tuple[int, int]:
    """``(nonzeros, total)`` over the parameters outside the set (biases, norms, embeddings)."""
    inside = {id(t.param) for t in tensors}
    nnz = total = 0
    for p in model.parameters():
        if id(p) not in inside:
            nnz += int(torch.count_nonzero(p))
            total += p.numel()
    return nnz, total
