"""random: uniform over the allowed candidates, never the anchor's group."""

import torch

from negmine.testing import make_context
from negmine_random.generator import RandomNegatives


def test_uniform_and_excluding():
    n = 6
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    ctx = make_context(torch.zeros(n, n), groups=groups)
    gen = RandomNegatives(seed=0)
    counts = torch.zeros(n, n)
    for _ in range(2000):
        negs = gen.generate(ctx)[1]
        counts[torch.arange(n), negs.index[:, 0]] += 1
    assert counts[0, 0] == 0 and counts[0, 1] == 0 and counts[1, 0] == 0  # same group never drawn
    allowed = counts[0, 2:]
    assert (allowed - 500).abs().max() < 100  # 4 allowed candidates, ~500 draws each


def test_k_without_replacement_and_invalid_when_short():
    ctx = make_context(torch.zeros(3, 3))
    negs = RandomNegatives(RandomNegatives.Options(k=4), seed=1).generate(ctx)[0]
    assert negs.index.shape == (3, 3)  # at most N candidates
    for i in range(3):
        chosen = negs.index[i][negs.valid[i]].tolist()
        assert len(chosen) == 2 and i not in chosen and len(set(chosen)) == 2
