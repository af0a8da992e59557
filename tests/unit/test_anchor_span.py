"""Span-localized negatives (``meta["anchor_span"]``): a negative compared with the positive on part of a sequence
anchor only."""

import json
import math

import pytest
import torch

from negmine import Trainer
from negmine.errors import PluginError
from negmine.generator import NegativeGenerator, Negatives
from negmine.model import DualEncoder, Embedding, Task, TensorPairs, span_view
from negmine.scoring import MatchmapScore


def test_span_view_takes_the_frames_inside_each_span():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(6, 3, 10, generator=g)
    lengths = torch.tensor([10, 4, 7, 1, 9, 10])
    span = torch.tensor([[0.0, 1.0], [0.25, 0.5], [0.3, 0.31], [0.0, 1.0], [0.5, 0.9], [0.95, 1.0]])
    view = span_view(Embedding(values, lengths), span)
    for i in range(6):
        n = int(lengths[i])
        start = min(math.floor(float(span[i, 0]) * n), n - 1)
        end = max(start + 1, min(math.ceil(float(span[i, 1]) * n), n))
        assert int(view.lengths[i]) == end - start
        assert torch.equal(view.values[i, :, : end - start], values[i, :, start:end])
    assert span_view(Embedding(values), span[:1].expand(6, 2)).lengths.tolist() == [10] * 6  # no lengths: all valid


class MapsAndSequences(DualEncoder):
    """Side a: Float[N, 6] -> a map Float[N, 4, 3] (3 regions); side b: Float[N, 6] -> a sequence Float[N, 4, 8]
    whose valid length is 4 + id % 5, carried in the input's last column."""

    def __init__(self) -> None:
        super().__init__(MatchmapScore("misa"))
        self.a = torch.nn.Linear(6, 12)
        self.b = torch.nn.Linear(5, 32)

    def encode(self, side, inputs):
        if side == 0:
            return Embedding(self.a(inputs).view(-1, 4, 3))
        return Embedding(self.b(inputs[:, :5]).view(-1, 4, 8), inputs[:, 5].long())


def _task() -> Task:
    g = torch.Generator().manual_seed(1)
    b = torch.randn(32, 6, generator=g)
    b[:, 5] = 4 + torch.arange(32) % 5
    data = TensorPairs(torch.randn(32, 6, generator=g), b)
    torch.manual_seed(0)  # the same initial weights in every run
    return Task("maps", MapsAndSequences(), data, data)


SPAN = (0.25, 0.6)


class RolledWithSpan(NegativeGenerator):
    """One side-a negative per anchor: the next item's input, falsifying the anchor's frames in SPAN."""

    name = "rolled-span"
    span: tuple[float, float] | None = SPAN
    seen: list[torch.Tensor] = []  # the ids of each batch mined

    def mine(self, ctx):
        b = len(ctx.batch)
        RolledWithSpan.seen.append(ctx.batch.ids.clone())
        meta = {} if self.span is None else {"anchor_span": torch.tensor(self.span).expand(b, 1, 2).clone()}
        return {0: Negatives.from_inputs(ctx.batch.a.roll(1, 0)[:, None].clone(), torch.zeros(b, 1), **meta)}


class RolledWhole(RolledWithSpan):
    name = "rolled-whole"
    span = None


def _first_loss(tmp_path, generator, margin=100.0):
    task = _task()
    start = MapsAndSequences()
    start.load_state_dict(task.model.state_dict())
    run = tmp_path / generator.name
    Trainer(task, {"steps": 1, "batch_size": 8, "negatives": [generator.name], "log_every": 1, "eval_size": 8,
                   "device": "cpu", "margin": margin, "checkpoint_every": 0},
            generators=[generator], run_dir=str(run), reporter=None).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if "loss" in r), start


def test_a_spanned_negative_hinges_on_the_span_alone(tmp_path):
    # margin 100 keeps every hinge active, so the logged loss is the mean of margin - positive + negative
    RolledWithSpan.seen.clear()
    row, model = _first_loss(tmp_path, RolledWithSpan)
    task = _task()
    ids = RolledWithSpan.seen[0]
    a, b = model.encode(0, task.train.side_batch(0, ids)), model.encode(1, task.train.side_batch(1, ids))
    window = span_view(b, torch.tensor(SPAN).expand(8, 2))
    negatives = Embedding(a.values.roll(1, 0))
    expected = (100.0 - model.score_pairs(a, window) + model.score_pairs(negatives, window)).mean()
    assert row["group0/side0/loss"] == pytest.approx(float(expected.detach()), rel=1e-5)
    # the whole-anchor loss differs: the span is what the negative is compared on
    whole = (100.0 - model.score_pairs(a, b) + model.score_pairs(negatives, b)).mean().detach()
    assert row["group0/side0/loss"] != pytest.approx(float(whole), rel=1e-3)
    assert _first_loss(tmp_path, RolledWhole)[0]["group0/side0/loss"] == pytest.approx(float(whole), rel=1e-5)


@pytest.mark.parametrize("span, message", [
    (torch.tensor([[[0.5, 0.2]]]), "0 <= start < end <= 1"),
    (torch.tensor([[[0.0, 1.5]]]), "0 <= start < end <= 1"),
    (torch.tensor([[0.0, 1.0]]), "Float[B, K, 2]"),
])
def test_malformed_spans_name_the_generator(tmp_path, span, message):
    class Bad(RolledWithSpan):
        name = "bad-span"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {0: Negatives.from_inputs(ctx.batch.a[:, None].clone(), torch.zeros(b, 1),
                                             anchor_span=span.expand(b, *span.shape[1:]).clone())}

    with pytest.raises(PluginError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _first_loss(tmp_path, Bad)
