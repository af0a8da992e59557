"""Look-matched positives (``meta["matched_positive"]`` with ``meta["matched"]``): a negative that carries one is
compared with it instead of its pair's own positive."""

import json

import pytest
import torch
from test_centre_on_others import MapsAndSequences, _task  # the same two-tower model and data

from negmine import Trainer
from negmine.errors import PluginError
from negmine.generator import NegativeGenerator, Negatives
from negmine.model import Embedding


class Matched(NegativeGenerator):
    """One negative per anchor on side ``side``: the next item's input; its matched positive, on the even anchors
    only, the input two items on (``matched = False``: no matched positive at all)."""

    name = "matched"
    side = 0
    matched = True
    seen: list[torch.Tensor] = []

    def mine(self, ctx):
        b = len(ctx.batch)
        Matched.seen.append(ctx.batch.ids.clone())
        own = ctx.batch.a if self.side == 0 else ctx.batch.b
        meta = {}
        if self.matched:
            meta = {"matched_positive": own.roll(2, 0)[:, None].clone(),
                    "matched": (torch.arange(b) % 2 == 0)[:, None]}
        return {self.side: Negatives.from_inputs(own.roll(1, 0)[:, None].clone(), torch.zeros(b, 1), **meta)}


def _first_row(tmp_path, generator, encoding="joint", margin=10.0):
    task = _task()
    start = MapsAndSequences()
    start.load_state_dict(task.model.state_dict())
    run = tmp_path / f"{generator.name}-{generator.side}-{generator.matched}-{encoding}"
    Trainer(task, {"steps": 1, "batch_size": 8, "negatives": [generator.name], "log_every": 1, "eval_size": 8,
                   "device": "cpu", "margin": margin, "checkpoint_every": 0, "negative_encoding": encoding},
            generators=[generator], run_dir=str(run), reporter=None).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if "loss" in r), start


@pytest.mark.parametrize("encoding", ["joint", "separate"])
@pytest.mark.parametrize("side", [0, 1])
def test_a_matched_negative_hinges_on_its_matched_positive_by_brute_force(tmp_path, side, encoding):
    # margin 10 keeps every hinge active, so the logged loss is the mean hinge over the batch
    Matched.side, Matched.matched = side, True
    Matched.seen.clear()
    row, model = _first_row(tmp_path, Matched, encoding)
    task = _task()
    ids = Matched.seen[0]
    a, b = model.encode(0, task.train.side_batch(0, ids)), model.encode(1, task.train.side_batch(1, ids))
    n = len(ids)

    def score(image, caption):  # one pair's score from the step's starting weights
        return float(model.score_pairs(Embedding(image[None]), Embedding(caption[None]))[0].detach())

    hinges, plain = [], []
    for i in range(n):
        if side == 0:  # caption i against the next image; matched: the image two on
            pos, neg, matched = score(a.values[i], b.values[i]), score(a.values[i - 1], b.values[i]), \
                score(a.values[i - 2], b.values[i])
        else:
            pos, neg, matched = score(a.values[i], b.values[i]), score(a.values[i], b.values[i - 1]), \
                score(a.values[i], b.values[i - 2])
        plain.append(10.0 - pos + neg)
        hinges.append(10.0 - (matched if i % 2 == 0 else pos) + neg)
    loss = row[f"group0/side{side}/loss"] - 10.0  # compared without the margin, which would swamp the differences
    want = sum(hinges) / n - 10.0
    assert loss == pytest.approx(want, rel=1e-3, abs=1e-5)
    assert abs(want - (sum(plain) / n - 10.0)) > 1e-3  # the matched positives changed the loss
    Matched.matched = False
    assert _first_row(tmp_path, Matched, encoding)[0][f"group0/side{side}/loss"] - 10.0 == pytest.approx(
        sum(plain) / n - 10.0, rel=1e-3, abs=1e-5)
    Matched.side, Matched.matched = 0, True


def test_a_negative_matched_with_itself_gives_no_gradient(tmp_path):
    # its hinge is the margin whatever the model: the positive drawn the way the negative was is the negative itself
    class Itself(Matched):
        name = "matched-itself"

        def mine(self, ctx):
            b = len(ctx.batch)
            neg = ctx.batch.a.roll(1, 0)[:, None]
            return {0: Negatives.from_inputs(neg.clone(), torch.zeros(b, 1), matched_positive=neg.clone(),
                                             matched=torch.ones(b, 1, dtype=torch.bool))}

    task = _task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    Trainer(task, {"steps": 1, "batch_size": 8, "negatives": ["matched-itself"], "log_every": 1, "eval_size": 8,
                   "device": "cpu", "margin": 10.0, "checkpoint_every": 0},
            generators=[Itself], run_dir=str(tmp_path / "itself"), reporter=None).fit()
    rows = [json.loads(line) for line in (tmp_path / "itself" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if "loss" in r)["loss"] == pytest.approx(10.0, abs=1e-4)
    after = task.model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-7) for k in before)


@pytest.mark.parametrize("meta, message", [
    ({"matched_positive": torch.zeros(8, 1, 6)}, "needs meta['matched'] Bool[B, K]"),
    ({"matched": torch.ones(8, 1, dtype=torch.bool)}, "needs meta['matched'] Bool[B, K]"),
    ({"matched_positive": torch.zeros(8, 1, 6), "matched": torch.ones(8, 1)}, "needs meta['matched'] Bool[B, K]"),
    ({"matched_positive": torch.zeros(8, 2, 6), "matched": torch.ones(8, 1, dtype=torch.bool)}, "leading axes"),
    ({"matched_positive": torch.zeros(8, 1, 6), "matched": torch.ones(8, 1, dtype=torch.bool),
      "centre_on_others": torch.ones(8, 1, dtype=torch.bool)}, "cannot be combined"),
])
def test_malformed_matched_positives_name_the_generator(tmp_path, meta, message):
    class Bad(Matched):
        name = "bad-matched"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {0: Negatives.from_inputs(ctx.batch.a.roll(1, 0)[:, None].clone(), torch.zeros(b, 1),
                                             **{k: v.clone() for k, v in meta.items()})}

    with pytest.raises(PluginError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        _first_row(tmp_path, Bad)
    assert "bad-matched" in str(err.value)


def test_batch_negatives_cannot_carry_matched_positives(tmp_path):
    class BatchMatched(Matched):
        name = "batch-matched"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {0: Negatives.from_batch(torch.arange(b).roll(1)[:, None], torch.zeros(b, 1),
                                            matched_positive=ctx.batch.a[:, None].clone(),
                                            matched=torch.ones(b, 1, dtype=torch.bool))}

    with pytest.raises(PluginError, match="for input negatives"):
        _first_row(tmp_path, BatchMatched)
