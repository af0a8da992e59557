"""The bidirectional triplet margin loss with negatives combined in groups (paper eq. 1).

For each anchor pair i, side s and group g of sources, the loss takes the *hardest* negative (highest score) among all
valid negatives of the sources in g, and adds the hinge ``[margin + S(neg) - S(pos)]_+``. Groups are summed:
``combine = [["random"], ["hard-minibatch", "gan-targeted"]]`` is the paper code's "sampled + max(hard, edited)".
Summing the two sides gives ``L(I, A, I_n) + L(I, A, A_n)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def hardest(scores: Sequence[Tensor], valid: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-anchor hardest valid negative over several sources.

    scores: Float[B, K_j] per source (with gradient); valid: Bool[B, K_j].
    Returns (Float[B] the hardest score, -inf where none is valid; Bool[B] whether any negative is valid).
    """
    s = torch.cat(list(scores), dim=1)
    v = torch.cat(list(valid), dim=1)
    masked = s.masked_fill(~v, float("-inf"))
    return masked.amax(dim=1), v.any(dim=1)


def triplet_loss(
    positive: Tensor,
    negatives: Mapping[str, Mapping[int, tuple[Tensor, Tensor]]],
    combine: Sequence[Sequence[str]],
    margin: float = 1.0,
    reduction: str | Sequence[str] = "hardest",
    weights: Sequence[float] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Sum over groups and sides of the mean hinge on each anchor's hardest negative.

    positive: Float[B] score of each positive pair (with gradient).
    negatives: source name -> side (0/1) -> (scores Float[B, K] with gradient, valid Bool[B, K]).
    combine: groups of source names; a source absent from ``negatives`` (or without a side) is skipped.
    reduction: ``"hardest"`` (above) or ``"mean"``: each anchor's hinge is the mean over all its valid negatives
        in the group (the batch-all triplet loss; with ``random`` at large k, every in-batch impostor counts); one
        word for every group or one per group.
    weights: one factor per group multiplying its terms (default: 1 for every group); e.g. ``[1.0, 0.5]`` halves
        the pull of the second group's negatives against the first's.
    Returns the scalar loss and per-group statistics (``group{g}/side{s}/loss``, before the group's weight, and
    ``.../active``: the fraction of anchors whose hinge is positive). Anchors without a valid negative in a group
    do not count in that group's mean.
    """
    total = positive.new_zeros(())
    stats: dict[str, float] = {}
    for g, group in enumerate(combine):
        mode = reduction if isinstance(reduction, str) else reduction[g]
        for side in (0, 1):
            parts = [negatives[name][side] for name in group if name in negatives and side in negatives[name]]
            if not parts:
                continue
            if mode == "mean":
                s, v = torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
                has = v.any(dim=1)
                if not has.any():
                    continue
                per_neg = (margin + s - positive[:, None]).clamp_min(0) * v
                hinge = per_neg.sum(1)[has] / v.sum(1)[has]
            else:
                top, has = hardest([p[0] for p in parts], [p[1] for p in parts])
                if not has.any():
                    continue
                hinge = (margin + top[has] - positive[has]).clamp_min(0)
            term = hinge.mean()
            total = total + (term if weights is None else weights[g] * term)
            stats[f"group{g}/side{side}/loss"] = float(term.detach())
            stats[f"group{g}/side{side}/active"] = float((hinge.detach() > 0).float().mean())
    return total, stats


def source_telemetry(positive: Tensor, score: Tensor, valid: Tensor, margin: float) -> dict[str, float]:
    """Hardness statistics of one source's negatives (no gradient).

    positive: Float[B]; score, valid: [B, K]. Returns the mean negative score, the fraction of negatives scoring above
    their positive, and the fraction of active triplets (inside the margin).
    """
    pos = positive.detach()[:, None].expand_as(score)
    v = valid
    n = int(v.sum())
    if n == 0:
        return {"count": 0.0}
    s = score.detach()[v]
    p = pos[v]
    return {
        "count": float(n),
        "mean_score": float(s.mean()),
        "above_positive": float((s > p).float().mean()),
        "active": float((margin + s - p > 0).float().mean()),
    }


def hardest_shares(scores: Sequence[Tensor], valid: Sequence[Tensor], labels: Sequence[Tensor],
                   names: Sequence[str]) -> dict[str, float]:
    """Where each anchor's hardest valid negative of a group came from (no gradient).

    scores, valid, labels: per source of the group, Float / Bool / Long [B, K_j]; ``labels`` index ``names`` (the
    label of each negative, e.g. its source or its source and category). Returns, for each name, the share of the
    anchors with a valid negative whose hardest one carries that label (shares sum to 1; ties go to the first).
    """
    s = torch.cat([x.detach() for x in scores], dim=1)
    v = torch.cat(list(valid), dim=1)
    lab = torch.cat(list(labels), dim=1).to(s.device)
    has = v.any(dim=1)
    n = int(has.sum())
    if n == 0:
        return {}
    top = s.masked_fill(~v, float("-inf")).argmax(dim=1)
    picked = lab.gather(1, top[:, None])[:, 0][has]
    counts = torch.bincount(picked, minlength=len(names)).tolist()
    return {name: counts[i] / n for i, name in enumerate(names)}
