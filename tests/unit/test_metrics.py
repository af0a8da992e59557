"""Recall@k against a sort-based brute force."""

import torch

from negmine.metrics import recall_at_k


def brute(scores, k):
    n = scores.shape[0]
    a2b = sum(i in scores[i].argsort(descending=True)[:k].tolist() for i in range(n)) / n
    b2a = sum(i in scores[:, i].argsort(descending=True)[:k].tolist() for i in range(n)) / n
    return a2b, b2a


def test_recall_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(50, 50, generator=g) + 2 * torch.eye(50)
    r = recall_at_k(s, (1, 5, 10))
    for k in (1, 5, 10):
        a2b, b2a = brute(s, k)
        assert abs(r[f"a2b@{k}"] - a2b) < 1e-6 and abs(r[f"b2a@{k}"] - b2a) < 1e-6


def test_ties_are_pessimistic():
    r = recall_at_k(torch.ones(10, 10))
    assert r["mean@1"] == 0.0 and r["mean@5"] == 0.0


def test_groups_remove_same_group_competitors():
    s = torch.eye(4)
    s[0, 1] = 2.0  # item 1 beats the positive of query 0 ...
    assert recall_at_k(s, (1,))["a2b@1"] == 0.75
    groups = torch.tensor([0, 0, 1, 2])  # ... but it is another caption of the same image
    assert recall_at_k(s, (1,), groups=groups)["a2b@1"] == 1.0
