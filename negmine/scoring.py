"""Pairwise score functions: how similar is side-a item i to side-b item j.

Every score function offers two methods:

- ``pairwise(a, b) -> Float[Na, Nb]``: all pairs (the batch score matrix, retrieval);
- ``paired(a, b) -> Float[N]``: row i of ``a`` with row i of ``b`` (re-scoring chosen negatives with gradient).

Matchmap scores (DaveNet) compare a dense image map ``a.values`` Float[N, D, H, W] (any number of spatial axes) with a
sequence ``b.values`` Float[N, D, T] whose valid lengths are ``b.lengths``; the matchmap of one pair is
``M[r, t] = <a[:, r], b[:, t]>`` over regions r (flattened spatial positions) and frames t < length.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from negmine.model import Embedding

# Bound on the number of float elements of the largest intermediate a chunked pairwise matchmap creates
# (about 256 MB in float32). Chunks shrink until they fit, so memory stays O(chunk * Nb * R * T) <= this budget.
_CHUNK_ELEMENTS = 64 * 1024 * 1024


@attrs.frozen
class DotScore:
    """Inner product of vectors. a.values: Float[N, D]; b.values: Float[N, D]."""

    name = "dot"

    def pairwise(self, a: Embedding, b: Embedding) -> Tensor:
        return a.values @ b.values.T

    def paired(self, a: Embedding, b: Embedding) -> Tensor:
        return (a.values * b.values).sum(-1)


@attrs.frozen
class CosineScore:
    """Cosine similarity of vectors, optionally divided by a temperature. Inputs as :class:`DotScore`."""

    name = "cosine"
    eps: float = 1e-8

    def _norm(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)

    def pairwise(self, a: Embedding, b: Embedding) -> Tensor:
        return self._norm(a.values) @ self._norm(b.values).T

    def paired(self, a: Embedding, b: Embedding) -> Tensor:
        return (self._norm(a.values) * self._norm(b.values)).sum(-1)


def _frame_mask(b: Embedding) -> Tensor:
    """Bool[N, T]: which frames of the sequence side are valid."""
    n, _, t = b.values.shape
    if b.lengths is None:
        return torch.ones(n, t, dtype=torch.bool, device=b.values.device)
    return torch.arange(t, device=b.values.device)[None, :] < b.lengths.clamp(1, t)[:, None]


@attrs.frozen
class MatchmapScore:
    """DaveNet's matchmap scores between a dense map (side a) and a sequence (side b).

    aggregation: ``"misa"`` (mean over valid frames of the max over regions: DaveNet's default), ``"sisa"`` (mean over
        regions and valid frames), ``"sima"`` (mean over regions of the max over valid frames).
    normalize: L2-normalise every region and frame vector first (the ``cos`` variant).
    """

    aggregation: str = attrs.field(default="misa", validator=attrs.validators.in_(("misa", "sisa", "sima")))
    normalize: bool = False

    @property
    def name(self) -> str:
        return f"matchmap-{self.aggregation}"

    def _prepare(self, a: Embedding, b: Embedding) -> tuple[Tensor, Tensor, Tensor]:
        img = a.values.flatten(2)  # [Na, D, R]
        seq = b.values  # [Nb, D, T]
        if self.normalize:
            img = img / img.norm(dim=1, keepdim=True).clamp_min(1e-8)
            seq = seq / seq.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return img, seq, _frame_mask(b)

    def _aggregate(self, mm: Tensor, mask: Tensor) -> Tensor:
        """mm: Float[..., R, T]; mask: Bool[..., T] broadcastable -> Float[...]."""
        maskf = mask.to(mm.dtype)
        count = maskf.sum(-1).clamp_min(1)
        if self.aggregation == "misa":
            return (mm.amax(-2) * maskf).sum(-1) / count
        if self.aggregation == "sisa":
            return (mm.sum(-2) * maskf).sum(-1) / (count * mm.shape[-2])
        # sima: padded frames must never win the max over time
        masked = mm.masked_fill(~mask[..., None, :], float("-inf"))
        return masked.amax(-1).mean(-1)

    def pairwise(self, a: Embedding, b: Embedding) -> Tensor:
        """Float[Na, Nb]. Computed in chunks of side-a items so no [Na, Nb, R, T] tensor is ever built."""
        img, seq, mask = self._prepare(a, b)
        na, _, r = img.shape
        nb, _, t = seq.shape
        chunk = max(1, min(na, _CHUNK_ELEMENTS // max(1, nb * r * t)))
        rows = []
        for start in range(0, na, chunk):
            part = img[start : start + chunk]  # [c, D, R]
            mm = torch.einsum("cdr,ndt->cnrt", part, seq)  # [c, Nb, R, T]
            rows.append(self._aggregate(mm, mask[None]))
        return torch.cat(rows)

    def paired(self, a: Embedding, b: Embedding) -> Tensor:
        """Float[N]: the matchmap score of (a_i, b_i)."""
        img, seq, mask = self._prepare(a, b)
        mm = torch.einsum("ndr,ndt->nrt", img, seq)  # [N, R, T]
        return self._aggregate(mm, mask)

    def matchmap(self, a: Embedding, b: Embedding) -> Tensor:
        """Float[N, *spatial, T]: the raw matchmaps of the pairs (a_i, b_i), for heat maps and salient regions."""
        img, seq, _ = self._prepare(a, b)
        mm = torch.einsum("ndr,ndt->nrt", img, seq)
        return mm.view(*a.values.shape[:1], *a.values.shape[2:], seq.shape[-1])
