"""Score functions against brute-force loops."""

import pytest
import torch

from negmine import CosineScore, DotScore, Embedding, MatchmapScore
from negmine import scoring as scoring_module


def brute_matchmap(img, seq, length, aggregation):
    """img: [D, H, W]; seq: [D, T]; only the first `length` frames count."""
    d, h, w = img.shape
    seq = seq[:, :length]
    mm = torch.zeros(h, w, length)
    for y in range(h):
        for x in range(w):
            for t in range(length):
                mm[y, x, t] = (img[:, y, x] * seq[:, t]).sum()
    if aggregation == "misa":
        return mm.reshape(h * w, length).max(0).values.mean()
    if aggregation == "sima":
        return mm.reshape(h * w, length).max(1).values.mean()
    return mm.mean()


@pytest.mark.parametrize("aggregation", ["misa", "sisa", "sima"])
def test_matchmap_pairwise_matches_brute_force(aggregation):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 4, 2, 3, generator=g)
    seq = torch.randn(5, 4, 7, generator=g)
    lengths = torch.tensor([7, 3, 1, 5, 6])
    score = MatchmapScore(aggregation)
    got = score.pairwise(Embedding(img), Embedding(seq, lengths))
    want = torch.stack([torch.stack([brute_matchmap(img[i], seq[j], int(lengths[j]), aggregation)
                                     for j in range(5)]) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # paired == diagonal of pairwise
    paired = score.paired(Embedding(img[:3]), Embedding(seq[:3], lengths[:3]))
    torch.testing.assert_close(paired, got.diagonal(), rtol=1e-5, atol=1e-5)


def test_matchmap_chunking_gives_the_same_answer(monkeypatch):
    g = torch.Generator().manual_seed(1)
    a = Embedding(torch.randn(9, 4, 3, 3, generator=g))
    b = Embedding(torch.randn(6, 4, 5, generator=g), torch.tensor([5, 4, 3, 2, 1, 5]))
    full = MatchmapScore().pairwise(a, b)
    monkeypatch.setattr(scoring_module, "_CHUNK_ELEMENTS", 1)  # forces one a-item per chunk
    torch.testing.assert_close(MatchmapScore().pairwise(a, b), full)


def test_matchmap_padded_frames_do_not_change_the_score():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(2, 4, 2, 2, generator=g)
    seq = torch.randn(2, 4, 3, generator=g)
    padded = torch.cat([seq, 100 * torch.ones(2, 4, 4)], dim=-1)
    for agg in ("misa", "sisa", "sima"):
        s1 = MatchmapScore(agg).pairwise(Embedding(img), Embedding(seq, torch.tensor([3, 3])))
        s2 = MatchmapScore(agg).pairwise(Embedding(img), Embedding(padded, torch.tensor([3, 3])))
        torch.testing.assert_close(s1, s2)


def test_matchmap_gradient_flows():
    img = torch.randn(2, 4, 2, 2, requires_grad=True)
    seq = torch.randn(2, 4, 3, requires_grad=True)
    MatchmapScore().pairwise(Embedding(img), Embedding(seq)).sum().backward()
    assert img.grad.abs().sum() > 0 and seq.grad.abs().sum() > 0


def test_vector_scores():
    a, b = torch.randn(4, 8), torch.randn(5, 8)
    torch.testing.assert_close(DotScore().pairwise(Embedding(a), Embedding(b)), a @ b.T)
    cos = CosineScore().pairwise(Embedding(a), Embedding(b))
    want = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    torch.testing.assert_close(cos, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(CosineScore().paired(Embedding(a[:4]), Embedding(b[:4])), want.diagonal()[:4])


def test_pooled_masks_padding():
    v = torch.zeros(2, 3, 4)
    v[0, :, :2] = 1.0
    v[0, :, 2:] = 50.0  # padding beyond length 2
    v[1] = 2.0
    pooled = Embedding(v, torch.tensor([2, 4])).pooled()
    torch.testing.assert_close(pooled, torch.tensor([[1.0] * 3, [2.0] * 3]))
