"""Retrieval metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def recall_at_k(scores: Tensor, ks: Sequence[int] = (1, 5, 10), groups: Tensor | None = None) -> dict[str, float]:
    """Recall@k in both directions from a square score matrix with the positives on the diagonal.

    scores: Float[N, N], ``scores[i, j]`` = score(a_i, b_j). ``a2b`` ranks b items for each a query (row), ``b2a`` ranks
    a items for each b query (column). groups: Long[N] optional; items of the query's group other than itself are
    removed from the ranking (several captions of one image must not count as misses).

    Ties are pessimistic: a candidate scoring *equal* to the positive ranks ahead of it, so a collapsed model (all
    scores equal) gets recall 0, not 1. Returns ``a2b@k``, ``b2a@k`` and ``mean@k`` (their average) for each k, plus
    ``mean_r`` (the average over all of them).
    """
    n = scores.shape[0]
    if scores.shape != (n, n):
        raise ValueError(f"recall_at_k needs a square score matrix, got {tuple(scores.shape)}")
    s = scores.float()
    diag = s.diagonal()
    others = ~torch.eye(n, dtype=torch.bool, device=s.device)
    if groups is not None:
        others &= groups[:, None] != groups[None, :]
    # rank = number of competitors scoring >= the positive (0 means first)
    rank_a2b = ((s >= diag[:, None]) & others).sum(1)
    rank_b2a = ((s >= diag[None, :]) & others).sum(0)
    out: dict[str, float] = {}
    for k in ks:
        a2b = float((rank_a2b < k).float().mean())
        b2a = float((rank_b2a < k).float().mean())
        out[f"a2b@{k}"] = a2b
        out[f"b2a@{k}"] = b2a
        out[f"mean@{k}"] = (a2b + b2a) / 2
    out["mean_r"] = sum(out[f"mean@{k}"] for k in ks) / len(ks)
    return out
