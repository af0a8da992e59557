"""Running under ``torchrun``: process groups, and gathers that carry gradient.

In-batch negatives come from the *global* batch: each rank scores its local anchors against every rank's items
(open_clip's "local loss"). The all-gather keeps the autograd graph (its backward sums the gradients that every rank
computed for a slice into the rank that owns it), and the trainer averages parameter gradients across ranks after
``backward``, which together equal the gradient of the single-process loss on the combined batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import attrs
import torch
import torch.distributed as dist
from torch import Tensor

from negmine.model import Embedding


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "cpu") -> DistInfo:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device) in ("cuda", "auto") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # one GPU per process; "cuda" then means this rank's GPU
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(clean: bool = True) -> None:
    """Tear the default process group down (no-op without one).

    ``clean`` first waits at a barrier so that no rank destroys its group while a peer is still working (rank 0
    writing files, say): without it a gloo rank that left early aborted at interpreter exit in 2 of 70 two-process
    runs ("terminate called without an active exception"), with it in none of 144. After an error the peers may
    never arrive, so ``clean=False`` skips the barrier.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if clean and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def shut_down_when_done() -> Iterator[None]:
    """Run the block, then :func:`shutdown` the process group: at the barrier when it finished, at once when it raised."""
    try:
        yield
    except BaseException:
        shutdown(clean=False)
        raise
    shutdown(clean=True)


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's slice.

    Written out (rather than torch.distributed.nn's all_gather) because gloo's all-to-all backward there mis-handles
    non-contiguous gradients, which dense maps produce; an all-reduce of one contiguous buffer has no such trap.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r)/d(gathered)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """[B, ...] on each rank -> [world*B, ...], differentiable. Identity in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def gather_embedding(emb: Embedding) -> Embedding:
    """Gather an :class:`Embedding` from every rank (sequences padded to the longest across ranks), with gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return emb
    values = emb.values
    if values.dim() > 2 and emb.lengths is not None:
        longest = torch.tensor([values.shape[-1]], device=values.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        values = torch.nn.functional.pad(values, (0, int(longest) - values.shape[-1]))
    lengths = None if emb.lengths is None else all_gather_no_grad(emb.lengths)
    return Embedding(all_gather_with_grad(values.contiguous()), lengths)


def average_gradients(parameters) -> None:
    """All-reduce and average the gradients of ``parameters`` across ranks (no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def global_batch_stats(loss: Tensor, positive: Tensor, scores: Tensor) -> dict[str, float]:
    """The global batch's ``loss`` (the mean over ranks of each rank's local loss: what the averaged gradients
    descend), ``positive_score`` (mean over every rank's positives, Float[B] each) and ``score_std`` (the spread of
    the whole [B * W, N] score matrix, whose rows the ranks hold, Float[B, N] each), with one all-reduce; in one
    process the local values."""
    s = scores.detach().double()
    parts = torch.stack([loss.detach().double().reshape(()), positive.detach().double().sum(),
                         torch.tensor(float(positive.numel()), dtype=torch.float64, device=s.device),
                         s.sum(), s.pow(2).sum(), torch.tensor(float(s.numel()), dtype=torch.float64, device=s.device)])
    world = 1
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(parts)
        world = dist.get_world_size()
    loss_sum, pos_sum, pos_n, total, squares, n = parts.tolist()
    var = (squares - total * total / n) / max(n - 1, 1)  # unbiased, as torch.std
    return {"loss": loss_sum / world, "positive_score": pos_sum / pos_n, "score_std": max(var, 0.0) ** 0.5}
