"""The grouped triplet loss against a per-anchor loop."""

import pytest
import torch

from negmine.loss import source_telemetry, triplet_loss


@pytest.mark.parametrize("reduction,weights", [("hardest", None), ("mean", None), ("hardest", [1.0, 0.25]),
                                               ("mean", [0.5, 2.0])])
def test_grouped_loss_matches_loop(reduction, weights):
    g = torch.Generator().manual_seed(0)
    b = 6
    pos = torch.randn(b, generator=g)
    negs = {
        "random": {0: (torch.randn(b, 1, generator=g), torch.ones(b, 1, dtype=torch.bool)),
                   1: (torch.randn(b, 1, generator=g), torch.ones(b, 1, dtype=torch.bool))},
        "hard": {0: (torch.randn(b, 2, generator=g), torch.rand(b, 2, generator=g) > 0.3),
                 1: (torch.randn(b, 2, generator=g), torch.rand(b, 2, generator=g) > 0.3)},
        "edit": {0: (torch.randn(b, 3, generator=g), torch.rand(b, 3, generator=g) > 0.5)},
    }
    combine = [["random"], ["hard", "edit"]]
    margin = 0.7
    loss, stats = triplet_loss(pos, negs, combine, margin, reduction, weights)
    want = 0.0
    for g, group in enumerate(combine):
        for side in (0, 1):
            hinges = []
            for i in range(b):
                cands = [float(negs[n][side][0][i, k]) for n in group if side in negs[n]
                         for k in range(negs[n][side][0].shape[1]) if negs[n][side][1][i, k]]
                if cands and reduction == "hardest":
                    hinges.append(max(0.0, margin + max(cands) - float(pos[i])))
                elif cands:  # batch-all: every valid negative's hinge, averaged per anchor
                    hinges.append(sum(max(0.0, margin + c - float(pos[i])) for c in cands) / len(cands))
            if hinges:
                want += (1.0 if weights is None else weights[g]) * sum(hinges) / len(hinges)
    assert abs(float(loss) - want) < 1e-5
    assert "group1/side0/loss" in stats and "group0/side1/active" in stats


def test_loss_gradient_only_through_hardest():
    pos = torch.zeros(1, requires_grad=True)
    scores = torch.tensor([[0.1, 0.5, 0.3]], requires_grad=True)
    loss, _ = triplet_loss(pos, {"s": {1: (scores, torch.ones(1, 3, dtype=torch.bool))}}, [["s"]], 1.0)
    loss.backward()
    assert scores.grad.tolist() == [[0.0, 1.0, 0.0]]
    assert pos.grad.tolist() == [-1.0]


def test_no_valid_negative_gives_zero_loss():
    pos = torch.zeros(2)
    loss, stats = triplet_loss(pos, {"s": {0: (torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.bool))}}, [["s"]])
    assert float(loss) == 0.0 and stats == {}


def test_telemetry():
    pos = torch.tensor([1.0, 1.0])
    score = torch.tensor([[2.0, 0.5], [-5.0, 0.2]])
    valid = torch.tensor([[True, True], [True, False]])
    t = source_telemetry(pos, score, valid, margin=1.0)
    assert t["count"] == 3
    assert abs(t["above_positive"] - 1 / 3) < 1e-6
    assert abs(t["active"] - 2 / 3) < 1e-6
