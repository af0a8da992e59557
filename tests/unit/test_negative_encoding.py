"""Joint encoding of input negatives: a negative goes through the encoder in one pass with the batch it belongs to."""

import json

import pytest
import torch

from negmine import Trainer
from negmine.generator import NegativeGenerator, Negatives
from negmine.model import concat_inputs
from negmine.testing import make_task
from negmine_random.generator import RandomNegatives


class HalfCopies(NegativeGenerator):
    """Side-a negatives that are copies of the positives' own inputs, for the first half of the anchors only (so a
    pass of the negatives alone sees other batch statistics than the batch)."""

    name = "half-copies"

    def mine(self, ctx):
        b = len(ctx.batch)
        valid = torch.zeros(b, 1, dtype=torch.bool)
        valid[: b // 2] = True
        return {0: Negatives.from_inputs(ctx.batch.a[:, None].clone(), torch.zeros(b, 1), valid)}


def _first_step(tmp_path, encoding: str, batchnorm: bool) -> dict:
    task = make_task(n=64, seed=0)
    if batchnorm:
        task.model.proj_a = torch.nn.Sequential(task.model.proj_a, torch.nn.BatchNorm1d(4))
    run = tmp_path / f"{encoding}-{batchnorm}"
    Trainer(task, {"steps": 1, "batch_size": 16, "negatives": ["half-copies"], "negative_encoding": encoding,
                   "log_every": 1, "eval_size": 8, "device": "cpu", "margin": 1.0},
            generators=[HalfCopies], run_dir=str(run), reporter=None).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if "loss" in r)


def test_a_copy_of_the_positive_scores_as_the_positive_when_encoded_jointly(tmp_path):
    # a copy scores exactly as its positive, so each of its hinges is the margin: with BatchNorm too when joint
    for batchnorm in (False, True):
        assert _first_step(tmp_path, "joint", batchnorm)["group0/side0/loss"] == pytest.approx(1.0, abs=1e-5)
    assert _first_step(tmp_path, "separate", False)["group0/side0/loss"] == pytest.approx(1.0, abs=1e-5)
    # in a pass of their own, BatchNorm normalises the copies with other statistics: they no longer score as the
    # positives (the leak that let a model tell GAN edits from originals without looking at their content)
    assert _first_step(tmp_path, "separate", True)["group0/side0/loss"] != pytest.approx(1.0, abs=1e-3)


def _running_mean_after_one_step(tmp_path, negatives: list[str], encoding: str) -> torch.Tensor:
    task = _bn_task()
    run = tmp_path / f"{'-'.join(negatives)}-{encoding}"
    Trainer(task, {"steps": 1, "batch_size": 16, "negatives": negatives, "negative_encoding": encoding,
                   "log_every": 1, "eval_size": 8, "device": "cpu", "margin": 1.0, "checkpoint_every": 0},
            generators=[HalfCopies, RandomNegatives], run_dir=str(run), reporter=None).fit()
    return task.model.proj_a[1].running_mean.clone()


def test_joint_clean_leaves_running_statistics_to_the_batchs_own_pairs(tmp_path):
    # the first step's loss is joint encoding's: the negatives are normalised together with the batch
    clean = _first_step(tmp_path, "joint-clean", True)
    assert clean["group0/side0/loss"] == pytest.approx(1.0, abs=1e-5)
    assert clean["loss"] == pytest.approx(_first_step(tmp_path, "joint", True)["loss"], abs=1e-6)
    # the running statistics moved only with the batch's own pass: as in a step without input negatives (the same
    # batch, the same initial weights), whereas joint encoding also moves them with the batch plus its copies
    own_pairs_only = _running_mean_after_one_step(tmp_path, ["random"], "joint")
    assert torch.allclose(_running_mean_after_one_step(tmp_path, ["half-copies"], "joint-clean"), own_pairs_only)
    assert not torch.allclose(_running_mean_after_one_step(tmp_path, ["half-copies"], "joint"), own_pairs_only)


def test_concat_inputs():
    a, b = torch.zeros(2, 3), torch.ones(4, 3)
    assert concat_inputs([a, b]).shape == (6, 3)
    joined = concat_inputs([(a, torch.tensor([1, 2])), (b, torch.tensor([3, 4, 5, 6]))])
    assert joined[0].shape == (6, 3) and joined[1].tolist() == [1, 2, 3, 4, 5, 6]
    assert concat_inputs([{"x": a}, {"x": b}])["x"].shape == (6, 3)
    assert concat_inputs([a, torch.zeros(2, 4)]) is None  # trailing shapes differ
    assert concat_inputs([a, b.long()]) is None  # dtypes differ
    assert concat_inputs([(a,), b]) is None  # forms differ


def test_negative_encoding_is_validated():
    from negmine.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'joint'"):
        Trainer(make_task(), {"negative_encoding": "jiont"}, generators=[HalfCopies], run_dir=None, reporter=None)


class ShiftedEncoder(NegativeGenerator):
    """Encodes shifted copies of the batch's side a in training mode, as an edit generator scores its edits."""

    name = "shifted-encoder"

    def mine(self, ctx):
        shifted = ctx.batch.a + 5.0  # a batch with statistics far from the training batches'
        score = ctx.model.score_pairs(ctx.model.encode(0, shifted), ctx.embeddings[1])
        return {0: Negatives.from_inputs(shifted[:, None], score[:, None])}


def _bn_task():
    task = make_task(n=64, seed=0)
    task.model.proj_a = torch.nn.Sequential(task.model.proj_a, torch.nn.BatchNorm1d(4))
    return task


def test_running_stats_kept_restores_batchnorm_buffers():
    from negmine import running_stats_kept

    task = _bn_task()
    bn = task.model.proj_a[1]
    x = torch.randn(16, task.model.proj_a[0].in_features) + 3.0
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with running_stats_kept(task.model):
        task.model.proj_a(x)  # training mode: batch statistics are used and running ones move
        assert not torch.equal(bn.running_mean, before["running_mean"])
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    task.model.proj_a(x)  # outside the block the statistics move again: the helper does not freeze the layer
    assert not torch.equal(bn.running_mean, before["running_mean"])
    with running_stats_kept(object()):  # not a module: nothing to keep, no error
        pass


def test_mining_does_not_move_the_models_running_statistics(tmp_path):
    from negmine.generator import MiningContext

    task = _bn_task()
    model = task.model.train()
    bn = task.model.proj_a[1]
    batch = task.train.batch(torch.arange(16))
    with torch.no_grad():
        emb = (model.encode(0, batch.a), model.encode(1, batch.b))
    scores = model.score_matrix(*emb)
    ctx = MiningContext(batch=batch, embeddings=emb, candidates=emb, scores=(scores.T, scores),
                        positive=torch.arange(16), exclude=torch.eye(16, dtype=torch.bool), candidate_ids=batch.ids,
                        model=model, task=task, step=0, margin=1.0, device=torch.device("cpu"))
    before = bn.running_mean.clone()
    negs = ShiftedEncoder().generate(ctx)[0]
    assert torch.equal(bn.running_mean, before)
    assert negs.score.shape == (16, 1) and torch.isfinite(negs.score).all()
    ShiftedEncoder().mine(ctx)  # the same generator called bare (no template method) does move them
    assert not torch.equal(bn.running_mean, before)
