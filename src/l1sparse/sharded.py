"""Sharded parameters (``DTensor``: FSDP2's ``fully_shard``, tensor parallel): the scheduler's
counts and selections on each rank's local shard, combined with collectives.

Under FSDP2 every penalised weight is a :class:`~torch.distributed.tensor.DTensor`: each rank
holds a piece (``to_local()``) of the global tensor. The scheduler needs, over the **global**
tensors, the nonzero count, the live units (rows and columns with a nonzero) and the k-th
largest score ``|∂L/∂w_i| / c_i``; this module computes each on the local shards and combines
them with ``all_reduce`` over the default process group, so that

* every rank gets the same numbers, hence the same λ, the same decisions and the same final
  count (the scheduler's arithmetic on them is deterministic);
* no rank ever holds a full tensor: the extra memory per rank is proportional to its local
  shard (plus one vector of a weight's rows or columns, and a 4,096-bin histogram).

**Which rank counts what.** A placement ``Shard(d)`` (or FSDP2+TP's strided shard) splits a
tensor into disjoint pieces, ``Replicate()`` copies it. A rank's local piece is counted when its
coordinate is 0 on every ``Replicate`` dimension of the device mesh, so each global entry is
counted exactly once; then one ``all_reduce(SUM)`` over the world adds the pieces. A plain
tensor among DTensors (a module left unsharded) is counted by rank 0 only. For live units along
axis ``a`` (rows: 0, columns: 1), the local vector of per-unit maxima is first combined with
``all_reduce(MAX)`` over the mesh dimensions that shard the *other* axes (the pieces of one
unit), then counted on the ranks that are first on those dimensions and on the replicas.

**The k-th largest value without a gather.** Radix selection on the order-preserving 64-bit
keys of the values (their float64 bit patterns, the negative ones flipped): a histogram of the
top 12 bits over all shards (one ``all_reduce`` of 4,096 counts) says which bucket holds the
k-th largest; the next 12 bits are counted only among that bucket's entries, and so on: six
rounds give the exact value, the same as sorting the concatenation of all shards would.

``Partial`` placements (pending reductions) and meshes that do not span the world cannot be
counted this way and raise a ``ValueError`` naming the parameter and the placement.

**Checkpoints.** :func:`save_checkpoint` / :func:`load_checkpoint` write and read model,
optimizer (momentum, Adam moments and the penalty weights ``c_i``, all sharded) and scheduler
state with ``torch.distributed.checkpoint``, each rank its own shards; DCP reshards on load,
so a run may resume on another number of ranks. :func:`full_state_dict` gathers the weights to
rank 0 for :func:`~l1sparse.export.save_model`. (One module for everything sharded, a little
over 500 lines: the counts, the selection and the checkpoints share the same placement rules.)
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_dtensor",
    "any_dtensor",
    "local",
    "like",
    "abs_sum",
    "check_placements",
    "contributes",
    "all_sum",
    "all_finite",
    "nnz_and_live",
    "kth_largest",
    "first_order_guess",
    "exact_threshold",
    "local_scores",
    "guess_from_gradients",
    "drop_smallest",
    "let_in_largest",
    "save_checkpoint",
    "load_checkpoint",
    "full_state_dict",
]


def _dtensor_type():
    """``DTensor`` if its module is loaded: until something imports it (``fully_shard`` does),
    no tensor can be one, and importing it here would cost every ``import l1sparse`` a second
    or two."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _shards() -> tuple[type, ...]:
    from torch.distributed.tensor import Shard
    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:  # pragma: no cover - older torch
        return (Shard,)
    return (Shard, _StridedShard)


_DIGIT_BITS = 12  # histogram rounds of 4,096 bins: six rounds cover a 64-bit key
_CHUNK = 1 << 16  # entries turned into keys at a time (512 KiB of int64)
_SIGN = -(1 << 63)  # the int64 sign bit
_LOW63 = (1 << 63) - 1


# --------------------------------------------------------------------------- shards and owners


_PLAIN = (Tensor, torch.nn.Parameter)  # the common case, answered without a module lookup


def is_dtensor(t) -> bool:
    """Whether ``t`` is a :class:`~torch.distributed.tensor.DTensor` (a sharded parameter)."""
    if type(t) in _PLAIN:
        return False
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def any_dtensor(tensors) -> bool:
    """Whether any of ``tensors`` is a DTensor: the scheduler then counts with collectives."""
    return any(is_dtensor(t) for t in tensors)


def local(t: Tensor) -> Tensor:
    """The rank's local shard of a DTensor (sharing its storage: an in-place change of it is a
    change of the parameter), or ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t


def _shard_dim(placement) -> int | None:
    """The tensor dimension a shard-like placement splits, ``None`` for ``Replicate``."""
    return placement.dim if isinstance(placement, _shards()) else None


def check_placements(name: str, t: Tensor) -> None:
    """Raise ``ValueError`` if the sharded tensor ``name`` cannot be counted by this module.

    Supported: every mesh dimension ``Shard(d)`` (FSDP2's default ``Shard(0)``, tensor
    parallel's ``Shard(0)``/``Shard(1)``, FSDP2+TP's strided shard) or ``Replicate()`` (HSDP's
    replica dimension), on a device mesh that spans the default process group.

    >>> check_placements("fc1", torch.zeros(2, 2))  # a plain tensor: nothing to check
    """
    if not is_dtensor(t):
        return
    for placement in t.placements:
        if _shard_dim(placement) is None and not placement.is_replicate():
            raise ValueError(f"The parameter {name!r} has placement {placement!r} on its device "
                             f"mesh; the sparsity scheduler counts Shard and Replicate "
                             f"placements only (redistribute it, or leave it out with exclude=).")
    world = dist.get_world_size() if dist.is_initialized() else 1
    if t.device_mesh.size() != world:
        raise ValueError(f"The parameter {name!r} lives on a device mesh of "
                         f"{t.device_mesh.size()} ranks, the default process group has {world}; "
                         f"the sparsity scheduler counts over meshes that span every rank.")


def _first_on(t: Tensor, dims) -> bool:
    """Whether this rank's mesh coordinate is 0 on every mesh dimension in ``dims``."""
    coordinate = t.device_mesh.get_coordinate()
    return coordinate is not None and all(coordinate[i] == 0 for i in dims)


def contributes(t: Tensor) -> bool:
    """Whether this rank's local piece of ``t`` is counted: for a DTensor, when it is the first
    replica on every ``Replicate`` mesh dimension; a plain tensor in a distributed run is
    counted by rank 0 (every rank holds the same copy)."""
    if is_dtensor(t):
        return _first_on(t, [i for i, p in enumerate(t.placements) if _shard_dim(p) is None])
    return not dist.is_initialized() or dist.get_rank() == 0


# --------------------------------------------------------------------------- collectives


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _device() -> torch.device:
    """Where the collectives' buffers live: CUDA for NCCL, the CPU for gloo."""
    if _distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(t: Tensor, op=None, group=None) -> Tensor:
    if _distributed():
        buf = t.to(_device())
        dist.all_reduce(buf, op=dist.ReduceOp.SUM if op is None else op, group=group)
        return buf.to(t.device)
    return t


def all_sum(values: Sequence[int]) -> list[int]:
    """Integers summed over the ranks (one ``all_reduce``).

    >>> all_sum([1, 2])  # one process: unchanged
    [1, 2]
    """
    return [int(v) for v in _all_reduce(torch.tensor(list(values), dtype=torch.int64)).tolist()]


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every entry of every rank's local shards is finite (the same answer on every
    rank)."""
    ok = all(bool(torch.isfinite(local(t)).all()) for t in tensors)
    return bool(_all_reduce(torch.tensor([int(ok)]), dist.ReduceOp.MIN if _distributed()
                            else None).item())


def like(t: Tensor, like_this: Tensor) -> Tensor:
    """``t``, a tensor of the local shard's shape, as a DTensor sharded as ``like_this`` (the
    penalty weights ``c_i`` of a sharded weight: saved sharded by
    ``torch.distributed.checkpoint``); ``t`` itself when ``like_this`` is a plain tensor."""
    if not is_dtensor(like_this):
        return t
    return _dtensor_type().from_local(t, like_this.device_mesh, like_this.placements,
                              run_check=False, shape=like_this.shape, stride=like_this.stride())


@torch.no_grad()
def abs_sum(w: Tensor) -> Tensor:
    """``Σ|w_i|`` over the global tensor, as a plain 0-d float tensor on the shard's device:
    the local sums of the counted shards, added with one ``all_reduce``.

    >>> float(abs_sum(torch.tensor([1.0, -2.0])))
    3.0
    """
    total = local(w).detach().abs().sum().float()
    if not is_dtensor(w):
        return total
    return _all_reduce(total if contributes(w) else torch.zeros_like(total))


# --------------------------------------------------------------------------- counts


def _unit_vector(w: Tensor, axis: int) -> Tensor:
    """Per unit along ``axis`` of the local shard: 1 where the unit has a nonzero (int32)."""
    a = local(w).detach()
    if a.dim() < 2:
        return (a != 0).to(torch.int32)
    others = tuple(d for d in range(a.dim()) if d != axis)
    if a.numel() == 0:  # an empty shard (uneven sharding): no live unit here
        return torch.zeros(a.shape[axis], dtype=torch.int32, device=a.device)
    return (a != 0).amax(dim=others).to(torch.int32)


def nnz_and_live(groups: Sequence[Sequence[Tensor]]) -> list[tuple[int, int, int]]:
    """Per group of tensors: ``(nonzeros of all its tensors, live rows, live columns of its
    first tensor)`` over the global tensors, the same on every rank.

    Two rounds of collectives for all groups together: ``all_reduce(MAX)`` of the live-unit
    flags over the mesh dimensions that split a unit (one call per such dimension), then one
    ``all_reduce(SUM)`` of every count over the world.

    >>> nnz_and_live([[torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]])]])  # one process
    [(2, 2, 2)]
    """
    dev = _device()
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    nnz: list[Tensor] = []
    vectors: list[Tensor] = []  # per group: live-row flags, live-column flags
    leaders: list[bool] = []
    pending: dict[tuple, list[int]] = {}  # (mesh, mesh dim) -> slots to combine with MAX
    meshes = {}
    for ts in groups:
        nnz.append(sum((torch.count_nonzero(local(t)).to(dev) for t in ts if contributes(t)),
                       zero))
        w = ts[0]
        for axis in (0, 1):
            vectors.append(_unit_vector(w, axis).to(dev))
            if is_dtensor(w) and w.dim() >= 2:
                # the mesh dimensions that split one unit among ranks: those sharding another
                # axis; the unit is counted by the first rank on them and on the replicas
                split = [i for i, p in enumerate(w.placements)
                         if _shard_dim(p) is not None and _shard_dim(p) != axis]
                repl = [i for i, p in enumerate(w.placements) if _shard_dim(p) is None]
                for i in split:
                    meshes[id(w.device_mesh)] = w.device_mesh
                    pending.setdefault((id(w.device_mesh), i), []).append(len(vectors) - 1)
                leaders.append(_first_on(w, split + repl))
            else:
                leaders.append(contributes(w))
    for (mesh_id, dim), slots in pending.items():  # the same order on every rank
        flat = _all_reduce(torch.cat([vectors[s] for s in slots]), dist.ReduceOp.MAX,
                           group=meshes[mesh_id].get_group(dim))
        offset = 0
        for s in slots:
            n = vectors[s].numel()
            vectors[s], offset = flat[offset:offset + n], offset + n
    live = [torch.count_nonzero(v) if lead else zero for v, lead in zip(vectors, leaders)]
    stats = [x for i in range(len(groups)) for x in (nnz[i], live[2 * i], live[2 * i + 1])]
    totals = _all_reduce(torch.stack(stats)).tolist() if stats else []
    return [(int(totals[3 * i]), int(totals[3 * i + 1]), int(totals[3 * i + 2]))
            for i in range(len(groups))]


# --------------------------------------------------------------------------- selection


def _keys(x: Tensor) -> Tensor:
    """Order-preserving int64 keys: the float64 bit patterns, negative values' flipped."""
    bits = x.detach().reshape(-1).to(torch.float64).view(torch.int64)
    return torch.where(bits >= 0, bits, bits ^ _LOW63)


def _value(key: int) -> float:
    """The float whose key is ``key`` (inverse of :func:`_keys`)."""
    bits = key if key >= 0 else key ^ _LOW63
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def _count(parts: Sequence[Tensor]) -> int:
    return all_sum([sum(p.numel() for p in parts)])[0]


def _chunks(parts: Sequence[Tensor]):
    """The values of ``parts`` in flat pieces of at most ``_CHUNK`` entries."""
    for p in parts:
        flat = p.detach().reshape(-1)
        for i in range(0, flat.numel(), _CHUNK):
            yield flat[i:i + _CHUNK]


def kth_largest(parts: Sequence[Tensor], k: int) -> float:
    """The k-th largest (1-indexed) of the values of every rank's ``parts`` together, exact.

    ``parts`` are plain local tensors (each rank passes the pieces it counts, see
    :func:`contributes`); every rank must call this with the same ``k``, which must lie in
    ``1..total``. Radix selection with one ``all_reduce`` of a 4,096-bin histogram per 12 bits
    of the keys (six rounds, each a pass over the parts); no values are sent, and the keys are
    made chunk by chunk (``_CHUNK`` entries), so the extra memory does not grow with the
    parts. NaN is not allowed.

    >>> kth_largest([torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.25])], 2)
    0.5
    """
    if not _distributed():
        n = sum(p.numel() for p in parts)
        if not 1 <= k <= n:
            raise ValueError(f"k must be in [1, {n}]. Got {k}.")
    prefix, remaining, done = 0, int(k), 0  # `done` leading bits of the answer are known
    while done < 64:
        width = min(_DIGIT_BITS, 64 - done)
        shift = 64 - done - width
        mask = (1 << width) - 1
        hist = torch.zeros(mask + 1, dtype=torch.int64, device=_device())
        for chunk in _chunks(parts):
            u = _keys(chunk) ^ _SIGN  # unsigned order in the bits: digits read from the top
            if done:  # the candidates: entries whose leading bits are the prefix found
                u = u[((u >> (shift + width)) & ((1 << done) - 1)) == prefix]
            hist += torch.bincount((u >> shift) & mask, minlength=mask + 1).to(hist.device)
        hist = _all_reduce(hist)
        above = hist.flip(0).cumsum(0)  # entries with a digit >= (mask - j)
        j = int(torch.searchsorted(above, torch.tensor(remaining, dtype=above.dtype,
                                                       device=above.device)))
        if j > mask:
            raise ValueError(f"k = {k} exceeds the number of values ({int(above[-1])}).")
        digit = mask - j
        remaining -= int(above[j]) - int(hist[digit])
        prefix, done = (prefix << width) | digit, done + width
    return _value(prefix + _SIGN)  # back from the unsigned order to the signed key


def first_order_guess(parts: Sequence[Tensor], k: float) -> float:
    """:func:`l1sparse.rule.first_order_guess` of the scores of every rank's ``parts``
    together: the geometric mean of the k-th and (k+1)-th largest score, the smallest positive
    one where that is zero, 0 when all are.

    >>> first_order_guess([torch.tensor([4.0, 1.0]), torch.tensor([3.0, 2.0])], 2)
    2.449489742783178
    """
    n = _count(parts)
    if n == 0:
        return 0.0
    k = max(1, min(int(round(k)), n))
    upper = kth_largest(parts, k)
    lower = kth_largest(parts, k + 1) if k < n else 0.0
    guess = math.sqrt(upper * lower) if lower > 0 else upper / 2
    if guess <= 0:
        positive = [p[p > 0] for p in parts]
        low = min((float(p.min()) for p in positive if p.numel()), default=math.inf)
        low = float(_all_reduce(torch.tensor([low], dtype=torch.float64),
                                dist.ReduceOp.MIN if _distributed() else None))
        guess = low if math.isfinite(low) else 0.0
    return guess


def exact_threshold(parts: Sequence[Tensor], k: int) -> float:
    """:func:`l1sparse.rule.exact_threshold` over every rank's ``parts`` together: midway
    between the k-th and (k+1)-th largest value, so that ``k`` values exceed it.

    >>> exact_threshold([torch.tensor([0.1, 0.5], dtype=torch.float64),
    ...                  torch.tensor([0.3, 0.9], dtype=torch.float64)], 2)
    0.4
    """
    n = _count(parts)
    if k <= 0:
        return kth_largest(parts, 1) if n else 0.0
    if k >= n:
        return -1.0
    return 0.5 * (kth_largest(parts, k) + kth_largest(parts, k + 1))


# --------------------------------------------------------------------------- the scheduler's uses


def _ratio(x: Tensor, c: Tensor | None) -> Tensor:
    """``|x| / c`` on the local shards, one new tensor (``c`` None: all ones)."""
    r = local(x).detach().abs()
    return r if c is None else r.div_(local(c))


def local_scores(params: Sequence[Tensor], weights: Sequence[Tensor | None]) -> list[Tensor]:
    """``|∂L/∂w_i| / c_i`` (float32, flattened) of the local shards this rank counts."""
    parts = []
    for p, c in zip(params, weights):
        if contributes(p):
            g = local(p.grad).detach().abs().flatten().float()
            parts.append(g if c is None else g.div_(local(c).flatten().float()))
    return parts


@torch.no_grad()
def guess_from_gradients(params: Sequence[Tensor], weights: Sequence[Tensor | None],
                         k: float) -> float | None:
    """The scheduler's first-order guess (:func:`first_order_guess`) from the gradients of
    sharded ``params`` and their penalty weights: None when a gradient is missing, NaN when
    one is not finite (the same answer on every rank)."""
    if any(p.grad is None for p in params):
        return None
    if not all_finite([p.grad for p in params]):
        return math.nan
    return first_order_guess(local_scores(params, weights), k)


@torch.no_grad()
def drop_smallest(params: Sequence[Tensor], weights: Sequence[Tensor | None],
                  goal: int) -> int:
    """Set to zero the surplus nonzeros with the smallest ``|w_i| / c_i`` so that ``goal``
    remain over all shards (the scheduler's final projection, too-dense side); returns how
    many were set to zero, over all ranks."""
    parts = []
    for p, c in zip(params, weights):
        if contributes(p):
            r = _ratio(p, c).flatten()
            parts.append(r.masked_fill_(r <= 0, -1.0))  # zeros are not candidates
    thr = exact_threshold(parts, goal)
    del parts
    removed = 0
    for p, c in zip(params, weights):
        w = local(p)
        drop = _ratio(p, c) <= thr
        drop &= w != 0
        if contributes(p):
            removed += int(drop.sum())
        w.masked_fill_(drop, 0.0)
    return all_sum([removed])[0]


@torch.no_grad()
def let_in_largest(params: Sequence[Tensor], weights: Sequence[Tensor | None], n: int,
                   lr: float) -> int:
    """Let in the ``n`` zeros with the largest ``|∂L/∂w_i| / c_i`` over all shards by a
    gradient step of size ``lr`` on those entries (the final projection, too-sparse side);
    returns how many entered, over all ranks."""
    parts = []
    for p, c in zip(params, weights):
        if contributes(p):
            parts.append(_ratio(p.grad, c).masked_fill_(local(p) != 0, -1.0).flatten())
    thr = exact_threshold(parts, n)
    del parts
    revived = 0
    for p, c in zip(params, weights):
        w, g = local(p), local(p.grad)
        enter = _ratio(p.grad, c) > thr
        enter &= w == 0
        if contributes(p):
            revived += int(enter.sum())
        w.copy_(torch.where(enter, -lr * g, w))
    return all_sum([revived])[0]


# --------------------------------------------------------------------------- checkpoints


@contextmanager
def _scheduler_paused(scheduler):
    """DCP's ``get_state_dict`` creates a fresh optimizer's state with one ``step()`` at lr 0;
    the scheduler must not count it as a step (its step hook then returns early: the same
    guard that ignores a parent class's nested ``step()``)."""
    if scheduler is None:
        yield
        return
    scheduler._depth += 1
    try:
        yield
    finally:
        scheduler._depth -= 1


def _state(model, optimizer, scheduler):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    with _scheduler_paused(scheduler):
        model_sd, optim_sd = get_state_dict(model, optimizer)
    return model_sd, optim_sd


def save_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler=None, extra: dict | None = None) -> None:
    """Save model, optimizer (with the penalty weights ``c_i`` in its state) and scheduler
    state with ``torch.distributed.checkpoint``: every rank writes its own shards, nothing is
    gathered. Every rank must call it.

    Parameters
    ----------
    path : str or path-like
        A directory (created); use a new one per checkpoint: it is complete once DCP has
        written its ``.metadata`` file, which it writes last.
    model, optimizer : the sharded model (``fully_shard``) and its optimizer
    scheduler : SparsityScheduler, optional
    extra : dict, optional
        More state, the same on every rank (the data order: sampler position, generator
        state); plain values and tensors.
    """
    import torch.distributed.checkpoint as dcp

    model_sd, optim_sd = _state(model, optimizer, scheduler)
    state = {"model": model_sd, "optimizer": optim_sd}
    if scheduler is not None:  # one JSON leaf: DCP would flatten the history into keys
        state["scheduler"] = json.dumps(scheduler.state_dict())
    if extra is not None:
        state["extra"] = extra
    dcp.save(state, checkpoint_id=os.fspath(path))


def load_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler=None, extra: dict | None = None) -> dict | None:
    """Load what :func:`save_checkpoint` wrote into the (freshly built, sharded) model,
    optimizer and scheduler, and return ``extra`` filled from the checkpoint (give a template
    of the same keys and types). Every rank must call it.

    DCP stores every shard with its offsets in the global tensor, so a checkpoint written by
    one number of ranks loads on another (it is resharded); the scheduler's state holds only
    global numbers.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from .penalty import L1_WEIGHT

    path = os.fspath(path)
    model_sd, optim_sd = _state(model, optimizer, scheduler)
    # the penalty weights c_i are optimizer state that a fresh optimizer lacks: templates for
    # those the checkpoint holds
    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    params = dict(model.named_parameters())
    for fqn, entry in optim_sd.get("state", {}).items():
        if f"optimizer.state.{fqn}.{L1_WEIGHT}" in saved and L1_WEIGHT not in entry:
            entry[L1_WEIGHT] = torch.zeros_like(params[fqn])
    state = {"model": model_sd, "optimizer": optim_sd}
    if scheduler is not None:
        state["scheduler"] = ""
    if extra is not None:
        state["extra"] = extra
    dcp.load(state, checkpoint_id=path)
    with _scheduler_paused(scheduler):
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(json.loads(state["scheduler"]))
    return state.get("extra")


def full_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The model's full ``state_dict`` gathered to rank 0 and offloaded to the CPU (one tensor
    at a time); empty on the other ranks. Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
