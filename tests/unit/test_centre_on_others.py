"""Negatives centred on the batch's other anchors (``meta["centre_on_others"]``): a negative and its positive are
compared by their scores against the anchor relative to their mean scores against everyone else's anchor."""

import json

import pytest
import torch

from negmine import Trainer
from negmine.errors import PluginError
from negmine.generator import NegativeGenerator, Negatives
from negmine.model import DualEncoder, Embedding, Task, TensorPairs
from negmine.scoring import MatchmapScore


class MapsAndSequences(DualEncoder):
    """Side a: Float[N, 6] -> a map Float[N, 4, 3]; side b: Float[N, 6] -> a sequence Float[N, 4, 8]."""

    def __init__(self) -> None:
        super().__init__(MatchmapScore("sisa"))
        self.a = torch.nn.Linear(6, 12)
        self.b = torch.nn.Linear(6, 32)

    def encode(self, side, inputs):
        if side == 0:
            return Embedding(self.a(inputs).view(-1, 4, 3))
        return Embedding(self.b(inputs).view(-1, 4, 8))


def _task() -> Task:
    g = torch.Generator().manual_seed(3)
    data = TensorPairs(torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g))
    torch.manual_seed(0)  # the same initial weights in every run
    return Task("maps", MapsAndSequences(), data, data)


class Rolled(NegativeGenerator):
    """One negative per anchor on side ``SIDE``: the next item's input, centred on the other anchors or not."""

    name = "rolled"
    centre = False
    side = 0
    seen: list[torch.Tensor] = []

    def mine(self, ctx):
        b = len(ctx.batch)
        Rolled.seen.append(ctx.batch.ids.clone())
        own = ctx.batch.a if self.side == 0 else ctx.batch.b
        meta = {"centre_on_others": torch.ones(b, 1, dtype=torch.bool)} if self.centre else {}
        return {self.side: Negatives.from_inputs(own.roll(1, 0)[:, None].clone(), torch.zeros(b, 1), **meta)}


def _first_row(tmp_path, generator, margin=10.0):
    task = _task()
    start = MapsAndSequences()
    start.load_state_dict(task.model.state_dict())
    run = tmp_path / f"{generator.name}-{generator.side}-{generator.centre}"
    Trainer(task, {"steps": 1, "batch_size": 8, "negatives": [generator.name], "log_every": 1, "eval_size": 8,
                   "device": "cpu", "margin": margin, "checkpoint_every": 0},
            generators=[generator], run_dir=str(run), reporter=None).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if "loss" in r), start


@pytest.mark.parametrize("side", [0, 1])
def test_a_centred_negative_hinges_on_its_scores_relative_to_the_other_anchors(tmp_path, side):
    # brute force: margin 10 keeps every hinge active (scores differ by hundredths), so the logged loss is the mean hinge over the batch
    class Centred(Rolled):
        name = "rolled-centred"
        centre = True

    Centred.side = side
    Rolled.seen.clear()
    row, model = _first_row(tmp_path, Centred)
    task = _task()
    ids = Rolled.seen[0]
    a, b = model.encode(0, task.train.side_batch(0, ids)), model.encode(1, task.train.side_batch(1, ids))
    scores = model.score_matrix(a, b).detach()  # [i, j]: image i, caption j
    if side == 0:  # negative image i: the next image, against every caption
        neg = model.score_matrix(Embedding(a.values.roll(1, 0)), b).detach()
    else:  # negative caption i: the next caption, against every image; row i of neg is the negative of pair i
        neg = model.score_matrix(a, Embedding(b.values.roll(1, 0))).detach().T
    pos = scores if side == 0 else scores.T  # row i: pair i's positive against every anchor of the other side
    n = len(ids)
    hinges = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        offset = (neg[i, others] - pos[i, others]).mean()
        hinges.append(10.0 - pos[i, i] + neg[i, i] - offset)
    # compared without the margin, which would swamp the differences
    loss = row[f"group0/side{side}/loss"] - 10.0
    assert loss == pytest.approx(float(torch.stack(hinges).mean()) - 10.0, rel=1e-3, abs=1e-5)
    # without the centring the loss is the plain hinge, which differs
    plain = torch.stack([10.0 - pos[i, i] + neg[i, i] for i in range(n)]).mean() - 10.0
    assert abs(loss - float(plain)) > 10 * max(abs(float(plain)) * 1e-3, 1e-5)
    Rolled.side = side
    assert _first_row(tmp_path, Rolled)[0][f"group0/side{side}/loss"] - 10.0 == pytest.approx(float(plain), rel=1e-3,
                                                                                              abs=1e-5)
    Rolled.side = 0


@pytest.mark.parametrize("meta, message", [
    ({"centre_on_others": torch.ones(8, 1)}, "Bool[B, K]"),
    ({"centre_on_others": torch.ones(8, 2, dtype=torch.bool)}, "Bool[B, K]"),
    ({"centre_on_others": torch.ones(8, 1, dtype=torch.bool), "anchor_span": torch.tensor([0.0, 0.5]).expand(8, 1, 2)},
     "cannot be combined"),
])
def test_malformed_centring_names_the_generator(tmp_path, meta, message):
    class Bad(Rolled):
        name = "bad-centre"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {0: Negatives.from_inputs(ctx.batch.a[:, None].clone(), torch.zeros(b, 1),
                                             **{k: v.clone() for k, v in meta.items()})}

    with pytest.raises(PluginError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        _first_row(tmp_path, Bad)
    assert "bad-centre" in str(err.value)


def test_batch_negatives_cannot_be_centred(tmp_path):
    class BatchCentred(Rolled):
        name = "batch-centred"

        def mine(self, ctx):
            b = len(ctx.batch)
            index = torch.arange(b).roll(1)[:, None]
            return {0: Negatives.from_batch(index, torch.zeros(b, 1),
                                            centre_on_others=torch.ones(b, 1, dtype=torch.bool))}

    with pytest.raises(PluginError, match="input or dataset-id negatives"):
        _first_row(tmp_path, BatchCentred)


def test_a_centred_negative_equal_to_its_positive_gives_no_gradient(tmp_path):
    # its hinge is the margin whatever the model, so one step leaves every weight where it was; with the positive's
    # part detached the loss raised both images' scores against every other caption and the scores ran away
    class Copies(Rolled):
        name = "copies-centred"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {0: Negatives.from_inputs(ctx.batch.a[:, None].clone(), torch.zeros(b, 1),
                                             centre_on_others=torch.ones(b, 1, dtype=torch.bool))}

    task = _task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    Trainer(task, {"steps": 1, "batch_size": 8, "negatives": ["copies-centred"], "log_every": 1, "eval_size": 8,
                   "device": "cpu", "margin": 10.0, "checkpoint_every": 0},
            generators=[Copies], run_dir=str(tmp_path / "copies"), reporter=None).fit()
    rows = [json.loads(line) for line in (tmp_path / "copies" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if "loss" in r)["loss"] == pytest.approx(10.0, abs=1e-4)
    after = task.model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-7) for k in before)
