"""The update-size telemetry (update_ratio, update_per_lr) against closed forms for SGD and Adam's first step."""

import json
import math

import pytest
import torch

from negmine import Trainer
from negmine.plugins import get_plugin_manager
from negmine.testing import make_task


def _one_step(tmp_path, optimizer: str):
    task = make_task(n=64, seed=0)
    before = [p.detach().clone() for p in task.model.parameters()]
    run = tmp_path / optimizer
    trainer = Trainer(task, {"steps": 1, "batch_size": 16, "negatives": ["random"], "optimizer": optimizer,
                             "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "log_every": 1, "eval_size": 8,
                             "device": "cpu"}, plugins=get_plugin_manager(), run_dir=str(run), reporter=None)
    trainer.fit()
    row = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line)
    after = list(task.model.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in after]
    return row, before, after, grads


def test_sgd_update_is_lr_times_the_gradient(tmp_path):
    row, before, _after, grads = _one_step(tmp_path, "sgd")
    g_sq = sum(float(g.pow(2).sum()) for g in grads)
    count = sum(g.numel() for g in grads)
    w_sq = sum(float(w.pow(2).sum()) for w in before)
    assert row["update_per_lr"] == pytest.approx(math.sqrt(g_sq / count), rel=1e-4)
    assert row["update_ratio"] == pytest.approx(0.05 * math.sqrt(g_sq / w_sq), rel=1e-4)


def test_adams_first_step_moves_every_weight_with_a_gradient_by_lr(tmp_path):
    # bias-corrected, the first Adam step is lr * g / (|g| + eps): lr for each weight whose gradient is not zero
    row, _before, _after, grads = _one_step(tmp_path, "adam")
    moving = sum(int((g.abs() > 1e-6).sum()) for g in grads) / sum(g.numel() for g in grads)
    assert 0.5 < moving
    assert row["update_per_lr"] == pytest.approx(math.sqrt(moving), rel=1e-2)


def test_collapse_advice_does_not_tell_a_run_with_a_random_group_to_add_one(tmp_path):
    """Issue 17, item 11."""
    import torch

    from negmine import Trainer
    from negmine_hard_minibatch.generator import HardMinibatch
    from negmine_random.generator import RandomNegatives
    from negmine_toy.task import build_toy

    warned = []

    class Capture:
        def warn(self, message):
            warned.append(message)

    for negatives in (["random", "hard-minibatch"], ["hard-minibatch"]):
        trainer = Trainer(build_toy("small", seed=0), {"steps": 1, "negatives": negatives},
                          generators=[RandomNegatives, HardMinibatch], run_dir=tmp_path / "r", reporter=Capture())
        for _ in range(20):
            trainer._watch_collapse(torch.ones(4, 4), {})
    assert len(warned) == 2
    assert "Add a random group" not in warned[0] and "even next to this stage's random group" in warned[0]
    assert "Add a random group" in warned[1]
