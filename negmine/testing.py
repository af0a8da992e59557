"""Helpers for testing generators without a trainer: build a :class:`MiningContext` from a score matrix, and run
the generator contract checks that negmine's own test suite runs over every installed generator."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from negmine.generator import MiningContext, NegativeGenerator, split_false_negatives
from negmine.model import Batch, DualEncoder, Embedding, Task, TensorPairs
from negmine.scoring import DotScore


class VectorModel(DualEncoder):
    """A linear dual encoder on vectors (for contract tests): side a Float[N, Da], side b Float[N, Db]."""

    sides = ("a", "b")

    def __init__(self, dim_a: int = 6, dim_b: int = 5, dim: int = 4) -> None:
        super().__init__(DotScore())
        self.proj_a = torch.nn.Linear(dim_a, dim)
        self.proj_b = torch.nn.Linear(dim_b, dim)

    def encode(self, side: int, inputs: Tensor) -> Embedding:
        return Embedding((self.proj_a if side == 0 else self.proj_b)(inputs))


def make_task(n: int = 64, seed: int = 0, groups: Tensor | None = None) -> Task:
    """A tiny random task with a :class:`VectorModel` (provides ``corpus``)."""
    g = torch.Generator().manual_seed(seed)
    data = TensorPairs(torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g), groups=groups)
    return Task("contract", VectorModel(), data, data, provides=frozenset({"corpus"}))


def make_context(
    scores: Tensor,
    *,
    scores_b: Tensor | None = None,
    ids: Tensor | None = None,
    groups: Tensor | None = None,
    margin: float = 1.0,
    task: Task | None = None,
    embeddings: tuple[Embedding, Embedding] | None = None,
) -> MiningContext:
    """A single-process context from a square score matrix S (Float[B, B], positives on the diagonal).

    ``scores[0] = S.T`` (side-a negatives) and ``scores[1] = S`` (side-b negatives), as the trainer builds them,
    unless ``scores_b`` gives side b separately. ``ctx.batch.a`` and ``ctx.batch.b`` are the inputs of the task's
    first B training pairs (``task`` defaults to a tiny vector task: Float[B, 6] and Float[B, 5]).
    """
    b = scores.shape[0]
    ids = torch.arange(b) if ids is None else ids
    groups = ids if groups is None else groups
    task = task or make_task(max(b, 8))
    # both sides' inputs (and extras) of the task's first B training pairs, so that a generator that reads
    # ctx.batch.a or ctx.batch.b (an INPUTS generator synthesizing from them) can be tested with this context
    batch_ab = task.train.batch(torch.arange(b) % len(task.train))
    if embeddings is None:
        with torch.no_grad():
            embeddings = (task.model.encode(0, batch_ab.a), task.model.encode(1, batch_ab.b))
    batch = Batch(batch_ab.a, batch_ab.b, ids, groups, dict(batch_ab.extras))
    side_b = scores if scores_b is None else scores_b
    return MiningContext(
        batch=batch,
        embeddings=embeddings,
        candidates=embeddings,
        scores=(scores.T.contiguous() if scores_b is None else scores.T.contiguous(), side_b),
        positive=torch.arange(b),
        exclude=(ids[:, None] == ids[None, :]) | (groups[:, None] == groups[None, :]),
        candidate_ids=ids,
        model=task.model,
        task=task,
        step=0,
        margin=margin,
        device=torch.device("cpu"),
    )


def batch_context(task: Task, ids: Tensor, step: int = 0) -> MiningContext:
    """The single-process context the trainer builds for the training pairs ``ids`` Long[B] of ``task``: both
    sides encoded without gradient, the score matrix S Float[B, B] as (S.T, S), pairs sharing an id or group
    excluded, and those the split's ``false_negatives`` marks."""
    model = task.model
    batch = task.train.batch(ids)
    with torch.no_grad():
        ea, eb = model.encode(0, batch.a), model.encode(1, batch.b)
        matrix = model.score_matrix(ea, eb)
    same = (batch.ids[:, None] == batch.ids[None]) | (batch.group_ids[:, None] == batch.group_ids[None])
    return MiningContext(batch=batch, embeddings=(ea, eb), candidates=(ea, eb), scores=(matrix.T, matrix),
                         positive=torch.arange(len(batch)), exclude=same, candidate_ids=batch.ids, model=model,
                         task=task, step=step, margin=1.0, device=torch.device("cpu"),
                         false_negatives=split_false_negatives(task.train, batch.ids, batch.ids))


def check_generator(cls: type[NegativeGenerator], task: Task | None = None, batch_size: int = 16,
                    options: Any = None) -> dict[int, Any]:
    """Run a generator on a real batch of a tiny task and validate its output (raises on a contract violation).

    Checks: requirements are satisfiable, output validates (shapes, ids, exclusion), the same seed gives the same
    negatives, and ``state_dict`` round-trips. ``options``: the generator's ``Options`` (its defaults when None).
    """
    task = task or make_task()
    cls.check_requirements(task)
    batch = task.train.batch(torch.arange(batch_size))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        s = task.model.score_matrix(*emb)
    ctx = MiningContext(batch, emb, emb, (s.T, s), torch.arange(batch_size),
                        (batch.ids[:, None] == batch.ids[None, :]) | (batch.group_ids[:, None] == batch.group_ids[None, :]),
                        batch.ids, task.model, task, 0, 1.0, torch.device("cpu"))
    first = cls(options, seed=7, task=task).generate(ctx)
    second_gen = cls(options, seed=7, task=task)
    second = second_gen.generate(ctx)
    for side in first:
        a, b = first[side], second[side]
        if a.index is not None and not torch.equal(a.index[a.valid], b.index[b.valid]):
            raise AssertionError(f"{cls.name}: the same seed gave different negatives")
    state = second_gen.state_dict()
    cls(options, seed=99, task=task).load_state_dict(state)
    return first
