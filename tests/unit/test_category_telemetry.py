"""Telemetry per category of negative (``meta["category"]`` + a generator's ``categories``) and the shares of each
hardest group's picks: against brute force, in a real training run, and the checks of malformed tags."""

import json

import pytest
import torch

from negmine import NegativeGenerator, Negatives, Trainer
from negmine.errors import PluginError
from negmine.loss import hardest_shares
from negmine.plugins import get_plugin_manager
from negmine.testing import make_task


def test_hardest_shares_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    names = ["a", "a/x", "a/y", "b"]
    for _ in range(20):
        b = 12
        scores = [torch.randn(b, 3, generator=gen), torch.randn(b, 2, generator=gen)]
        valid = [torch.rand(b, 3, generator=gen) > 0.4, torch.rand(b, 2, generator=gen) > 0.6]
        labels = [torch.randint(0, 3, (b, 3), generator=gen), torch.full((b, 2), 3)]
        got = hardest_shares(scores, valid, labels, names)
        picks = []
        for i in range(b):
            cands = [(float(s[i, k]), int(lab[i, k])) for s, v, lab in zip(scores, valid, labels, strict=True)
                     for k in range(s.shape[1]) if v[i, k]]
            if cands:
                picks.append(max(cands, key=lambda c: c[0])[1])
        if not picks:
            assert got == {}
            continue
        assert got == pytest.approx({n: picks.count(i) / len(picks) for i, n in enumerate(names)})
        assert sum(got.values()) == pytest.approx(1.0)


class Parity(NegativeGenerator):
    """Side b: the next four pairs of the batch, tagged by the parity of their batch position."""

    name = "parity"
    categories = ("even", "odd")
    bad = None  # a test sets a malformed tag here

    def mine(self, ctx):
        b = ctx.positive.shape[0]
        index = (torch.arange(b)[:, None] + torch.arange(1, 5)[None, :]) % b
        score = ctx.scores[1].gather(1, index)
        valid = ~ctx.excluded_at(index)
        category = index % 2 if self.bad is None else self.bad(index)
        return {1: Negatives.from_batch(index, score, valid, category=category)}


def _train(tmp_path, combine, reduction="hardest"):
    task = make_task(n=64, seed=0)
    run = tmp_path / "run"
    trainer = Trainer(task, {"steps": 3, "batch_size": 16, "negatives": ["random", "parity"], "combine": combine,
                             "reduction": reduction, "log_every": 1, "eval_size": 8, "device": "cpu"},
                      plugins=get_plugin_manager(), generators=[Parity], run_dir=str(run), reporter=None)
    trainer.fit()
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_per_category_telemetry_and_hardest_shares_in_a_run(tmp_path):
    rows = _train(tmp_path, [["random", "parity"]])
    assert len(rows) == 3
    for row in rows:
        # the categories split the source's negatives: counts add up, rates lie in [0, 1]
        assert row["parity/side1/even/count"] + row["parity/side1/odd/count"] == row["parity/side1/count"]
        assert 0 <= row["parity/side1/odd/active"] <= 1 and 0 <= row["parity/side1/even/above_positive"] <= 1
        # one hardest group of two sources: each anchor's pick came from one of them, one category of the tagged one
        shares = row["group0/side1/hardest/random"], row["group0/side1/hardest/parity"]
        assert sum(shares) == pytest.approx(1.0)
        assert row["group0/side1/hardest/parity/even"] + row["group0/side1/hardest/parity/odd"] == pytest.approx(
            shares[1])
        assert "group0/side0/hardest/random" not in row  # side a has one untagged source: nothing to share
    # a group that averages its hinges picks nothing, and untagged sources get no per-category keys
    rows = _train(tmp_path / "mean", [["random"], ["parity"]], reduction="mean")
    assert not any("/hardest/" in key for key in rows[-1]) and "random/side1/even/count" not in rows[-1]


@pytest.mark.parametrize("bad, message", [
    (lambda index: index.float(), r"meta\['category'\] must be Long\[B, K\] shaped like valid"),
    (lambda index: index[:, :2] % 2, r"meta\['category'\] must be Long\[B, K\] shaped like valid"),
    (lambda index: index % 3, r"must index the 2 categories \(-1: none\), got values in \[0, 2\]"),
])
def test_malformed_category_tags_name_the_generator(tmp_path, bad, message, monkeypatch):
    monkeypatch.setattr(Parity, "bad", staticmethod(bad))
    with pytest.raises(PluginError, match=message):
        _train(tmp_path, [["random", "parity"]])


def test_category_tags_need_category_names(tmp_path, monkeypatch):
    monkeypatch.setattr(Parity, "categories", ())
    with pytest.raises(PluginError, match="needs the generator's class attribute `categories`"):
        _train(tmp_path, [["random", "parity"]])
