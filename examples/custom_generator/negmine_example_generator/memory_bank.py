"""Cross-batch memory negatives: hardest items among the last ``capacity`` training items seen."""

from __future__ import annotations

import attrs
import torch

from negmine import Embedding, MiningContext, NegativeGenerator, Negatives, hookimpl, option


class MemoryBankNegatives(NegativeGenerator):
    """Hardest negatives from a FIFO memory of recent training items (returned as dataset ids, re-encoded by the
    trainer with gradient)."""

    name = "memory-bank"
    requires = frozenset({"corpus"})  # the trainer must be able to load items by id

    @attrs.frozen
    class Options:
        capacity: int = option(512, "items kept in the memory", min=1)
        k: int = option(1, "negatives per anchor and side", min=1)

    def __init__(self, options=None, *, seed=0, task=None):
        super().__init__(options, seed=seed, task=task)
        self.memory: list[Embedding | None] = [None, None]  # per side, Float[M, ...] detached, on CPU
        self.ids = torch.empty(0, dtype=torch.long)
        self.groups = torch.empty(0, dtype=torch.long)

    def mine(self, ctx: MiningContext) -> dict[int, Negatives]:
        out = {}
        if self.ids.numel():
            mem_ids = self.ids.to(ctx.device)
            clash = (ctx.batch.ids[:, None] == mem_ids[None, :]) | (ctx.batch.group_ids[:, None] == self.groups.to(
                ctx.device)[None, :])
            for side in (0, 1):
                memory = self.memory[side].to(ctx.device)
                # score of pair i with its side-s member replaced by memory item j: [B, M]
                if side == 0:
                    scores = ctx.model.score_matrix(memory, ctx.embeddings[1]).T
                else:
                    scores = ctx.model.score_matrix(ctx.embeddings[0], memory)
                scores = scores.masked_fill(clash, float("-inf"))
                top = scores.topk(min(self.options.k, scores.shape[1]), dim=1)
                valid = top.values > float("-inf")
                out[side] = Negatives.from_dataset(mem_ids[top.indices], top.values, valid)
        self._enqueue(ctx)
        return out

    def _enqueue(self, ctx: MiningContext) -> None:
        """Add this batch to the memory (after mining, so a batch never mines itself), dropping the oldest."""
        cap = self.options.capacity
        for side in (0, 1):
            new = ctx.embeddings[side].to("cpu")
            old = self.memory[side]
            merged = new if old is None else Embedding.cat([old, new])
            self.memory[side] = merged[slice(max(0, len(merged) - cap), None)]
        self.ids = torch.cat([self.ids, ctx.batch.ids.cpu()])[-cap:]
        self.groups = torch.cat([self.groups, ctx.batch.group_ids.cpu()])[-cap:]

    @hookimpl
    def negmine_stage_start(self, trainer, stage):
        # embeddings from another stage's model are not comparable: start empty (but keep a resumed memory)
        if trainer.step_in_stage == 0:
            self.memory, self.ids, self.groups = [None, None], self.ids[:0], self.groups[:0]

    def state_dict(self):
        state = super().state_dict()
        state["ids"], state["groups"] = self.ids, self.groups
        for side in (0, 1):
            if self.memory[side] is not None:
                state[f"memory{side}"] = self.memory[side].values
                if self.memory[side].lengths is not None:
                    state[f"lengths{side}"] = self.memory[side].lengths
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.ids, self.groups = state["ids"], state["groups"]
        self.memory = [
            Embedding(state[f"memory{s}"], state.get(f"lengths{s}")) if f"memory{s}" in state else None for s in (0, 1)
        ]
