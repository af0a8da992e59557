"""The trainer: one loop for any dual encoder, any negative sources, in stages.

Reading guide (one step, top to bottom in :meth:`Trainer._train_step`):

1. load the next batch of pairs (a seeded permutation per epoch, so the data position is two integers);
2. encode both sides once, gather the global batch under torchrun, and compute the score matrix once;
3. every active generator mines from the same detached context and returns :class:`~negmine.Negatives` per side;
4. every negative is re-scored *with gradient* (batch negatives read the shared matrix; dataset ids are loaded and
   encoded; synthesized inputs are encoded);
5. the grouped bidirectional triplet loss; backward; optimiser step; telemetry; lifecycle hooks.

Everything needed to continue exactly (model, optimiser, stage, step, data position, RNG, generator state) is in the
checkpoint, stored as tensors and plain values.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from negmine import checkpoint as ckpt
from negmine import distributed as dist_utils
from negmine.config import StageConfig, TrainConfig, build_config, generator_name, make_options, merge
from negmine.errors import CheckpointError, ConfigError, NonFiniteLossError, PluginError
from negmine.generator import MiningContext, NegativeGenerator, NegativeKind, Negatives, split_false_negatives
from negmine.loss import hardest_shares, source_telemetry, triplet_loss
from negmine.metrics import recall_at_k
from negmine.model import (
    Embedding,
    PairedDataset,
    Task,
    concat_inputs,
    flatten_inputs,
    index_inputs,
    running_stats_kept,
    span_view,
    to_device,
)

BEST_METRIC = "mean@5"
MATCHED = "matched-positive:"  # key prefix of the look-matched positives' embeddings in a joint encoding pass
COLLAPSE_PATIENCE = 20
DEAD_UNITS_FRACTION = 0.25  # warn when fewer of an embedding's units than this are ever non-zero in a batch


class PlainReporter:
    """Console output without rich: one line per log interval (used when not on a terminal)."""

    def __init__(self, stream: Any = None, quiet: bool = False) -> None:
        import sys

        self.stream = stream or sys.stderr
        self.quiet = quiet

    def start(self, total_steps: int, done_steps: int, run_dir: Path) -> None:
        self.log(f"run directory: {run_dir}  ({done_steps}/{total_steps} steps done)")

    def step(self, step: int, total: int, metrics: Mapping[str, Any], log_line: bool) -> None:
        if log_line:
            rate = metrics.get("steps_per_s", 0.0)
            eta = (total - step) / rate if rate else float("nan")
            self.log(
                f"step {step}/{total}  stage {metrics.get('stage')}  loss {metrics['loss']:.4f}  "
                f"lr {metrics['lr']:.2e}  {rate:.2f} step/s  eta {eta:.0f}s"
            )

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


@attrs.define
class _DataCursor:
    """Position in the training data: epoch number and offset in that epoch's permutation."""

    epoch: int = 0
    cursor: int = 0


def _same_init_files_as(saved: dict[str, Any], mine: dict[str, Any]) -> None:
    """Let a stage's ``init`` spelled differently (relative then absolute, through a symlink) still match on resume.

    The paths are compared by the file they name, from the current directory; a stored path that names no file here
    stays as it was, so the mismatch is reported.
    """
    for old, new in zip(saved.get("stages") or (), mine.get("stages") or (), strict=False):
        a, b = old.get("init"), new.get("init")
        if isinstance(a, str) and isinstance(b, str) and a != b:
            try:
                if os.path.samefile(a, b):
                    old["init"] = b
            except OSError:  # either file missing: not provably the same
                pass


def _matched_slots(negs: Negatives) -> Tensor | None:
    """Long[M] ascending: the flattened [B, K] slots of the valid negatives that carry a look-matched positive
    (``meta["matched"]``), or None when the record has none."""
    if negs.meta.get("matched_positive") is None:
        return None
    return (negs.valid & negs.meta["matched"].to(negs.valid.device)).flatten().nonzero().squeeze(1)


def _stable_seed(*parts: Any) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


class Trainer:
    """Train a :class:`~negmine.Task` (a dual encoder and paired data) with pluggable negatives.

    From Python::

        task = Task("mine", model=MyDualEncoder(), train=TensorPairs(xa, xb), val=TensorPairs(va, vb))
        trainer = Trainer(task, {"steps": 300, "negatives": ["random", "hard-minibatch"], "optimizer": "adam"},
                          generators=[RandomNegatives, HardMinibatch])
        summary = trainer.fit()

    task: the model and data (see :class:`~negmine.Task`).
    config: a :class:`~negmine.TrainConfig`, or a plain dict of config keys (validated; task defaults underneath).
    plugins: a :class:`~negmine.PluginManager` for generator lookup and lifecycle hooks (default: none, and only the
        classes in ``generators`` are known).
    generators: extra generator classes to make known by name (in addition to the plugins').
    run_dir: where checkpoints, metrics and the summary go (default: config.run_dir or ``runs/<task>-<time>``).
    resume: continue from ``run_dir/checkpoints/last.pt``.
    reporter: console output (``PlainReporter`` by default; the CLI passes a rich progress bar).
    """

    def __init__(
        self,
        task: Task,
        config: TrainConfig | Mapping[str, Any],
        *,
        plugins: Any = None,
        generators: Sequence[type[NegativeGenerator]] = (),
        run_dir: str | Path | None = None,
        resume: bool = False,
        reporter: Any = None,
    ) -> None:
        self.task = task
        self.model = task.model
        self.plugins = plugins
        self.generator_classes: dict[str, type[NegativeGenerator]] = dict(plugins.generators() if plugins else {})
        for cls in generators:
            self.generator_classes[cls.name] = cls
        if not isinstance(config, TrainConfig):
            raw = merge({"task": task.name}, task.defaults, dict(config))
            config = build_config(raw, self.generator_classes)
        self.config = config
        self.dist = dist_utils.current()
        self.device = torch.device(_resolve_device(config.device))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir or config.run_dir or f"runs/{task.name}-{stamp}")
        self.resume_requested = resume
        self.resumed = False
        self.reporter = reporter or PlainReporter(quiet=not self.dist.is_main)
        # progress
        self.stage_index = 0
        self.step_in_stage = 0
        self.global_step = 0
        self.data = _DataCursor()
        self.best = {"score": -math.inf, "step": -1, "stage": ""}
        self.history: list[dict[str, Any]] = []
        self.active: dict[str, NegativeGenerator] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self._collapse_count = 0
        self._collapse_warned = False
        self._joint_warned = False
        self._dead_units_count = [0, 0]
        self._dead_units_warned = [False, False]
        self._pending_state: dict[str, Any] | None = None
        self.initial: dict[str, Any] = {}
        self.keep_steps: set[int] = set()  # global steps whose weights are kept as checkpoints/step-N.pt
        # stop once global_step reaches this (last.pt saved, no summary written: the run stays resumable); None: to the
        # end. The experiment runner uses it to retrain a recorded run only as far as its children start.
        self.stop_at: int | None = None
        self.stopped = False  # fit() returned at stop_at, before the end
        self._initialised_stage = -1  # the stage whose init weights were loaded last
        self._check_stage_requirements()

    # ------------------------------------------------------------------------------------------------------------
    # Set-up
    # ------------------------------------------------------------------------------------------------------------

    @property
    def stage(self) -> StageConfig:
        return self.config.stages[self.stage_index]

    def _check_stage_requirements(self) -> None:
        """Fail before any training if a generator is unknown or the task lacks what it needs."""
        for stage in self.config.stages:
            for name in stage.negatives:
                cls = self.generator_classes.get(generator_name(name))
                if cls is None:
                    raise ConfigError([f"stage {stage.name!r}: unknown generator {name!r}"])
                cls.check_requirements(self.task)

    def _build_generators(self, stage: StageConfig) -> dict[str, NegativeGenerator]:
        gens = {}
        for name in stage.negatives:
            cls = self.generator_classes[generator_name(name)]
            options = make_options(cls, stage.generators.get(name, {}))
            seed = _stable_seed(self.config.seed, stage.name, name, self.dist.rank)
            gen = cls(options, seed=seed, task=self.task)
            if name != cls.name:
                # a second instance ("NAME:LABEL"): its negatives, telemetry and hook keys carry the source name
                gen.name = name
            gens[name] = gen
        return gens

    def _make_optimizer(self, stage: StageConfig) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = stage.lr or c.lr
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay)
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=c.weight_decay)
        return torch.optim.AdamW(params, lr=lr, weight_decay=c.weight_decay)

    def lr_at(self, step_in_stage: int) -> float:
        """The learning rate of a step in the current stage: linear warm-up, then step decay (a pure function)."""
        c = self.config
        lr = self.stage.lr or c.lr
        if c.warmup_steps and step_in_stage < c.warmup_steps:
            return lr * (step_in_stage + 1) / c.warmup_steps
        if c.lr_decay_every:
            start = c.lr_schedule_start if self.stage_index == 0 else 0
            lr *= c.lr_decay ** ((start + step_in_stage) // c.lr_decay_every)
        return lr

    # ------------------------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Run every stage to the end (or continue a resumed run); returns the summary written to ``summary.json``.

        With ``stop_at`` set, training stops once ``global_step`` reaches it (before the end): ``last.pt`` is saved,
        ``stopped`` is True and the summary returned has ``stopped_at`` and is not written (the run is resumable)."""
        torch.manual_seed(self.config.seed)
        self.model.to(self.device)
        dist_utils.broadcast_parameters(self.model)
        if self.resume_requested:
            self._load_resume_state()
        elif self.dist.is_main:
            self._prepare_run_dir()
        total = self.config.total_steps
        self.reporter.start(total, self.global_step, self.run_dir)
        if self.plugins:
            self.plugins.train_start(self)
        if not self.resumed and self.config.stages:
            self._apply_init()  # "before training" means the weights the first stage starts from
            self.initial = self.evaluate("val")
            self._append_metrics({"event": "eval", **self.initial})
            self.reporter.log(f"before training: {_recall_line(self.initial)}")
        try:
            while self.stage_index < len(self.config.stages):
                if self.stop_at is not None and self.global_step >= self.stop_at:
                    self.stopped = True  # e.g. resumed at or past stop_at, or stop_at at the end of a stage
                    break
                self._run_stage()
                if self.stopped:
                    break
        finally:
            self._unregister_generators()
            self.reporter.close()
        if self.stopped:
            self.reporter.log(f"stopped at step {self.global_step} of {self.config.total_steps} (stop_at): resumable")
            return {"task": self.task.name, "steps": self.global_step, "stopped_at": self.global_step,
                    "initial": _plain(self.initial), "evaluations": [_plain(h) for h in self.history]}
        summary = self._write_summary()
        if self.plugins:
            self.plugins.train_end(self, summary)
        return summary

    def _run_stage(self) -> None:
        stage = self.stage
        fresh = self._pending_state is None
        if fresh:
            self.step_in_stage = 0
            self._apply_init()
        self.optimizer = self._make_optimizer(stage)
        if fresh and stage.init_optimizer:
            self._apply_init_optimizer()
        self.active = self._build_generators(stage)
        if not fresh:
            state = self._pending_state
            self._pending_state = None
            self.optimizer.load_state_dict(state["optimizer"])
            for name, gen_state in state["generators"].items():
                if name in self.active:
                    self.active[name].load_state_dict(gen_state)
        self._collapse_count, self._collapse_warned = 0, False
        if self.plugins:
            for name, gen in self.active.items():
                self.plugins.register(gen, name=f"generator:{stage.name}:{name}")
            self.plugins.stage_start(self, stage)
        self.reporter.log(
            f"stage {stage.name!r}: {stage.steps} steps, negatives {list(stage.negatives)}, "
            f"combine {[list(g) for g in stage.combine]}"
            + (f", reduction {list(stage.reduction)}" if "mean" in stage.reduction else "")
            + (f", group weights {list(stage.group_weights_start)} moving to {list(stage.group_weights)} over "
               f"{stage.group_weights_ramp} steps" if stage.ramps
               else f", group weights {list(stage.group_weights)}" if any(w != 1 for w in stage.group_weights)
               else "")
        )
        c = self.config
        tick = time.perf_counter()
        while self.step_in_stage < stage.steps:
            metrics = self._train_step()
            self.step_in_stage += 1
            self.global_step += 1
            now = time.perf_counter()
            metrics["steps_per_s"] = 1.0 / max(now - tick, 1e-9)
            tick = now
            if self.plugins:
                self.plugins.step_end(self, self.global_step, metrics)
            log_line = self.global_step % c.log_every == 0 or self.step_in_stage == stage.steps
            if log_line:
                self._append_metrics(metrics)
            self.reporter.step(self.global_step, c.total_steps, metrics, log_line)
            if c.eval_every and self.global_step % c.eval_every == 0 and self.step_in_stage < stage.steps:
                self.evaluate_and_track()
            if c.checkpoint_every and self.global_step % c.checkpoint_every == 0 and self.step_in_stage < stage.steps:
                self.save_checkpoint(self.run_dir / "checkpoints" / "last.pt")
            if self.global_step in self.keep_steps:
                self.save_checkpoint(self.run_dir / "checkpoints" / f"step-{self.global_step}.pt")
            if self.stop_at is not None and self.global_step >= self.stop_at and self.step_in_stage < stage.steps:
                self.save_checkpoint(self.run_dir / "checkpoints" / "last.pt")
                self.stopped = True
                return
        final = self.evaluate_and_track()
        self.save_checkpoint(self.run_dir / "checkpoints" / f"stage-{stage.name}.pt")
        if self.plugins:
            self.plugins.stage_end(self, stage, final)
        self._unregister_generators()
        self.active, self.optimizer = {}, None  # the next stage starts with fresh generators and optimiser
        self.stage_index += 1
        self.step_in_stage = 0
        # last.pt now points at the start of the next stage (or the end of training)
        self.save_checkpoint(self.run_dir / "checkpoints" / "last.pt")

    def _apply_init(self) -> None:
        """Load the current stage's ``init`` weights (once per stage; "previous" keeps the model as it is)."""
        stage = self.stage
        if stage.init != "previous" and self._initialised_stage != self.stage_index:
            self.model.load_state_dict(ckpt.load(ckpt.resolve_init(stage.init))["model"])
        self._initialised_stage = self.stage_index

    def _apply_init_optimizer(self) -> None:
        """Continue the init checkpoint's optimizer state (Adam moments and step counts, SGD momentum): a stage that
        branches from another run then trains on as that run would have, except for what the stage changes."""
        path = ckpt.resolve_init(self.stage.init)
        state = ckpt.load(path)
        saved = state.get("optimizer") or {}
        # torch loads another optimizer's state without complaint and fails at the first step (SGD: KeyError
        # 'momentum'), so the checkpoint's own config decides
        theirs = json.loads(state["config"]).get("optimizer") if isinstance(state.get("config"), str) else None
        if theirs is not None and theirs != self.config.optimizer:
            raise CheckpointError(f"stage {self.stage.name!r}: the optimizer state of {str(path)!r} does not fit "
                                  f"this model or optimizer (it is {theirs}'s, this run uses {self.config.optimizer}); "
                                  "set optimizer to match, or init_optimizer = false")
        if not saved.get("state"):
            # a finished run's last.pt points at the start of a stage that does not exist: no optimizer yet
            hint = ("; a finished run's last.pt has none, its checkpoints/stage-NAME.pt (the end of stage NAME) "
                    "and step-N.pt do") if path.name == "last.pt" else ""
            raise CheckpointError(f"stage {self.stage.name!r}: init_optimizer is set but {str(path)!r} holds no "
                                  f"optimizer state{hint}")
        try:
            self.optimizer.load_state_dict(saved)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"stage {self.stage.name!r}: the optimizer state of {str(path)!r} does not fit "
                                  f"this model or optimizer ({err})") from None

    def _unregister_generators(self) -> None:
        if self.plugins:
            for gen in self.active.values():
                self.plugins.unregister(gen)

    def _next_ids(self) -> Tensor:
        """Long[B] ids of this rank's next batch; the global batch is B * world consecutive ids of a permutation."""
        n = len(self.task.train)
        b = self.config.batch_size
        global_b = b * self.dist.world_size
        if global_b > n:
            raise ConfigError([f"batch_size {b} x {self.dist.world_size} process(es) exceeds the {n} training pairs"])
        if self.data.cursor + global_b > n:  # drop the incomplete tail: every batch has the same size
            self.data.epoch += 1
            self.data.cursor = 0
        gen = torch.Generator().manual_seed(_stable_seed(self.config.seed, "data", self.data.epoch))
        perm = torch.randperm(n, generator=gen)
        start = self.data.cursor + self.dist.rank * b
        self.data.cursor += global_b
        return perm[start : start + b]

    def _train_step(self) -> dict[str, Any]:
        model, c = self.model, self.config
        model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step_in_stage)
        batch = self.task.train.batch(self._next_ids()).to(self.device)
        b = len(batch)

        # 1. encode once; candidates are the global batch (this rank's batch in one process)
        emb_a = model.encode(0, batch.a)
        emb_b = model.encode(1, batch.b)
        if self.dist.enabled:
            cand_ids = dist_utils.all_gather_no_grad(batch.ids)
            cand_groups = dist_utils.all_gather_no_grad(batch.group_ids)
        else:
            cand_ids, cand_groups = batch.ids, batch.group_ids
        rows = torch.arange(b, device=self.device)
        positive = rows + self.dist.rank * b
        cand_a, cand_b, scores_a, scores_b = self._batch_scores(emb_a, emb_b)
        pos_scores = scores_b[rows, positive]

        # 2. mine from one shared, detached context
        ctx = mining_context(batch, (emb_a, emb_b), (cand_a, cand_b), (scores_a, scores_b), positive, cand_ids,
                             cand_groups, model, self.task, self.global_step, c.margin, self.device)
        mined = {name: gen.generate(ctx) for name, gen in self.active.items()}

        # 3. re-score every negative with gradient. Joint encoding: the side that input or dataset-id negatives
        # replace is encoded again together with them, and the scores come from that pass, so that BatchNorm
        # normalises a positive and its negatives with the same statistics (in a pass of their own, a batch of GAN
        # edits has statistics of its own, and a model learns to score it low by them rather than by its content).
        # joint-clean: the joint pass normalises with the batch's and the negatives' statistics alike but leaves the
        # running statistics (what evaluation normalises with) to the first pass, the batch's own pairs: evaluation
        # sees no edits (on Audio CLEVRGAN statistics moved by edits cost Targeted Edits 1.8 points of R@10 on
        # average, up to 5.2: benchmarks/results/batchnorm_restats.md).
        clean_stats = self.stage.negative_encoding == "joint-clean"
        with running_stats_kept(model) if clean_stats else contextlib.nullcontext():
            joint: dict[tuple[str, int], Embedding] = {}
            if self.stage.negative_encoding in ("joint", "joint-clean"):
                for side in (0, 1):
                    own, encoded = self._encode_with_negatives(side, batch, mined)
                    if own is not None:
                        emb_a, emb_b = (own, emb_b) if side == 0 else (emb_a, own)
                        joint.update(encoded)
                if joint:
                    cand_a, cand_b, scores_a, scores_b = self._batch_scores(emb_a, emb_b)
                    pos_scores = scores_b[rows, positive]
            grad_scores = (scores_a, scores_b)
            rescored: dict[str, dict[int, tuple[Tensor, Tensor]]] = {}
            for name, per_side in mined.items():
                rescored[name] = {}
                for side, negs in per_side.items():
                    scores = self._rescore(side, negs, grad_scores, emb_a, emb_b, joint.get((name, side)),
                                           joint.get((MATCHED + name, side)))
                    rescored[name][side] = (scores, negs.valid.to(self.device))

        # 4. loss, update
        # a ramp (group_weights_start) moves the weights step by step within the stage; resumes recompute them from
        # step_in_stage, so a resumed run weighs each step as the uninterrupted one did
        weights = self.stage.group_weights_at(self.step_in_stage)
        loss, group_stats = triplet_loss(pos_scores, rescored, self.stage.combine, c.margin,
                                         self.stage.reduction or "hardest", weights or None)
        if self.stage.ramps:
            group_stats.update({f"group{g}/weight": w for g, w in enumerate(weights)})
        if not torch.isfinite(loss):
            last = self.run_dir / "checkpoints" / "last.pt"
            if last.is_file():
                kept = f"The last good checkpoint is {last}; lower the learning rate or enable grad_clip, then resume."
            else:  # the first steps: naming a file that does not exist would send the user looking for it
                every = self.config.checkpoint_every
                due = f"at step {every}" if every else "at the end of the stage"
                kept = (f"No checkpoint was written yet (the first is due {due}), so there is nothing to "
                        "resume: lower the learning rate or enable grad_clip, and start the run again.")
            raise NonFiniteLossError(
                f"the loss became {float(loss.detach())} at step {self.global_step + 1} (stage {self.stage.name!r}); "
                f"training stopped. {kept}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        update: dict[str, float] = {}
        # a log line (and the last step of a stage): the costlier telemetry is measured on these steps only
        logged = (self.global_step + 1) % c.log_every == 0 or self.step_in_stage + 1 == self.stage.steps
        if loss.requires_grad:
            loss.backward()
            dist_utils.average_gradients(self.model.parameters())
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            before = [p.detach().clone() for p in self.model.parameters()] if logged else None
            self.optimizer.step()
            if before is not None:
                update = self._update_size(before)

        # 5. telemetry
        metrics: dict[str, Any] = {
            "step": self.global_step + 1,
            "stage": self.stage.name,
            "loss": float(loss.detach()),
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch": self.data.epoch,
            "positive_score": float(pos_scores.detach().mean()),
        }
        metrics.update(group_stats)
        metrics.update(update)
        for name, per_side in mined.items():
            for side, negs in per_side.items():
                # the scores the loss saw (a generator's own no-grad score may come from another forward pass)
                seen = rescored[name][side][0].detach()
                for key, value in source_telemetry(pos_scores, seen, negs.valid.to(seen.device), c.margin).items():
                    metrics[f"{name}/side{side}/{key}"] = value
        if logged:
            metrics.update(self._category_telemetry(mined, rescored, pos_scores))
        self._watch_collapse(scores_b.detach(), metrics)
        if self.dist.enabled:  # log the global batch, as a single process on it would, not rank 0's rows
            metrics.update(dist_utils.global_batch_stats(loss, pos_scores, scores_b))
        self._watch_dead_units((emb_a, emb_b), metrics)
        return metrics

    def _category_telemetry(self, mined: Mapping[str, Mapping[int, Negatives]],
                            rescored: Mapping[str, Mapping[int, tuple[Tensor, Tensor]]],
                            pos_scores: Tensor) -> dict[str, float]:
        """Log lines only. For a source that tags its negatives (``meta["category"]``, names in its class's
        ``categories``): its telemetry per category (``NAME/sideS/CATEGORY/active`` ...). For each ``hardest`` group
        with several sources or a tagged one: the share of anchors whose hardest negative came from each source
        (``groupG/sideS/hardest/NAME``) and category (``.../hardest/NAME/CATEGORY``): which negatives the loss
        actually trained on, e.g. which attribute's edits of two per anchor, or hard in-batch negatives against
        edits."""
        out: dict[str, float] = {}
        margin = self.config.margin

        def tags(name: str, side: int) -> tuple[tuple[str, ...], Tensor | None]:
            cats = type(self.active[name]).categories if name in self.active else ()
            category = mined[name][side].meta.get("category") if cats else None
            return (cats, category) if category is not None else ((), None)

        for name, per_side in mined.items():
            for side in per_side:
                cats, category = tags(name, side)
                if category is None:
                    continue
                seen, valid = rescored[name][side][0].detach(), rescored[name][side][1]
                category = category.to(seen.device)
                for i, cat in enumerate(cats):
                    for key, value in source_telemetry(pos_scores, seen, valid & (category == i), margin).items():
                        out[f"{name}/side{side}/{cat}/{key}"] = value
        reduction = self.stage.reduction or "hardest"
        for g, group in enumerate(self.stage.combine):
            if (reduction if isinstance(reduction, str) else reduction[g]) != "hardest":
                continue
            for side in (0, 1):
                members = [n for n in group if n in rescored and side in rescored[n]]
                if len(members) < 2 and not any(tags(n, side)[1] is not None for n in members):
                    continue
                names: list[str] = []
                spans: list[tuple[str, int, int]] = []  # (source, first label, end) of each source's labels
                scores, valid, labels = [], [], []
                for n in members:
                    sc, va = rescored[n][side]
                    first = len(names)
                    names.append(n)  # the label of the source's untagged negatives
                    label = torch.full(va.shape, first, dtype=torch.long, device=va.device)
                    cats, category = tags(n, side)
                    if category is not None:
                        names.extend(f"{n}/{cat}" for cat in cats)
                        category = category.to(va.device).long()
                        label = torch.where(category >= 0, first + 1 + category, label)
                    spans.append((n, first, len(names)))
                    scores.append(sc)
                    valid.append(va)
                    labels.append(label)
                shares = hardest_shares(scores, valid, labels, names)
                if not shares:
                    continue
                for n, first, end in spans:
                    out[f"group{g}/side{side}/hardest/{n}"] = sum(shares[names[i]] for i in range(first, end))
                    for i in range(first + 1, end):
                        out[f"group{g}/side{side}/hardest/{names[i]}"] = shares[names[i]]
        return out

    def _update_size(self, before: list[Tensor]) -> dict[str, float]:
        """How far this step moved the weights (on log lines only: it needs a copy of them): ``update_ratio`` =
        ||delta|| / ||weights||, and ``update_per_lr`` = RMS(delta) / lr. Adam's first step from a fresh state moves
        every weight with a gradient by lr (1.0), later steps less. A jump between stages means that the optimizer
        state continued into the new stage does not fit its loss: Hard Neg branching from DaveNet's step 800 with
        DaveNet's Adam state, 0.045 -> 0.8 (the Hard Neg collapse, docs/concepts.md)."""
        params = [p.detach() for p in self.model.parameters()]
        # one device-to-host copy for all tensors, not two per tensor
        delta_sq, weight_sq = torch.stack([torch.stack([(p - old).pow(2).sum(), old.pow(2).sum()])
                                           for p, old in zip(params, before, strict=True)]).sum(0).tolist()
        count = sum(old.numel() for old in before)
        lr = self.optimizer.param_groups[0]["lr"]
        return {"update_ratio": math.sqrt(delta_sq / max(weight_sq, 1e-30)),
                "update_per_lr": math.sqrt(delta_sq / max(count, 1)) / lr if lr > 0 else 0.0}

    def _batch_scores(self, emb_a: Embedding, emb_b: Embedding) -> tuple[Embedding, Embedding, Tensor, Tensor]:
        """(candidates a, candidates b, scores_a Float[B, N], scores_b Float[B, N]): scores[s][i, j] scores pair i
        with its side-s member replaced by candidate j; the candidates are the global batch (this rank's batch in
        one process), and with one process there is one score matrix."""
        if self.dist.enabled:
            cand_a, cand_b = dist_utils.gather_embedding(emb_a), dist_utils.gather_embedding(emb_b)
            return cand_a, cand_b, self.model.score_matrix(cand_a, emb_b).T, self.model.score_matrix(emb_a, cand_b)
        matrix = self.model.score_matrix(emb_a, emb_b)  # [B, B]
        return emb_a, emb_b, matrix.T, matrix

    def _negative_inputs(self, side: int, negs: Negatives) -> Any:
        """Model inputs of the valid input or dataset-id negatives, in the order of their flattened [B, K] slots."""
        flat = negs.valid.to(self.device).flatten().nonzero().squeeze(1)  # only valid slots are loaded and encoded
        if negs.kind == NegativeKind.DATASET:
            ids = negs.index.flatten()[flat.to(negs.index.device)].cpu()
            return to_device(self.task.train.side_batch(side, ids), self.device)
        return to_device(index_inputs(flatten_inputs(negs.inputs), flat), self.device)

    def _encode_with_negatives(self, side: int, batch: Any, mined: dict[str, dict[int, Negatives]]
                               ) -> tuple[Embedding | None, dict[tuple[str, int], Embedding]]:
        """Encode the batch's side ``side`` and every input or dataset-id negative of that side in one forward
        pass: (the batch's embeddings, {(generator, side): the valid negatives' embeddings}), or (None, {}) when
        there are none, or when their inputs cannot be concatenated with the batch's (they are then encoded in a
        pass of their own, and a warning says so once)."""
        names, parts, sizes = [], [], []
        for name, per_side in mined.items():
            negs = per_side.get(side)
            if negs is not None and negs.kind != NegativeKind.BATCH and bool(negs.valid.any()):
                names.append(name)
                parts.append(self._negative_inputs(side, negs))
                sizes.append(int(negs.valid.sum()))
                slots = _matched_slots(negs)
                if slots is not None and slots.numel():  # their look-matched positives join the same pass
                    names.append(MATCHED + name)
                    parts.append(self._matched_inputs(negs, slots))
                    sizes.append(int(slots.numel()))
        if not parts:
            return None, {}
        own_inputs = batch.a if side == 0 else batch.b
        joined = concat_inputs([own_inputs, *parts])
        if joined is None:
            if not self._joint_warned:
                self._joint_warned = True
                self.reporter.warn(f"negatives of side {side} ({', '.join(names)}) cannot be concatenated with the "
                                   "batch's inputs (other shapes or types); they are encoded in a pass of their own")
            return None, {}
        emb = self.model.encode(side, joined)
        b = len(batch)
        encoded, start = {}, b
        for name, n in zip(names, sizes, strict=True):
            encoded[(name, side)] = emb[start : start + n]
            start += n
        return emb[0:b], encoded

    def _rescore(
        self, side: int, negs: Negatives, grad_scores: tuple[Tensor, Tensor], emb_a: Embedding, emb_b: Embedding,
        encoded: Embedding | None = None, matched: Embedding | None = None,
    ) -> Tensor:
        """Float[B, K] scores of the negatives of one side, with gradient through the model (``encoded``: the valid
        negatives' embeddings from a joint pass, else they are encoded here; ``matched``: likewise, the embeddings
        of their look-matched positives, ``meta["matched_positive"]``)."""
        if negs.kind == NegativeKind.BATCH:
            index = negs.index.to(self.device).clamp(0, grad_scores[side].shape[1] - 1).long()  # invalid slots too
            return grad_scores[side].gather(1, index)
        b, k = negs.valid.shape
        out = torch.full((b, k), float("-inf"), device=self.device)
        flat = negs.valid.to(self.device).flatten().nonzero().squeeze(1)
        if flat.numel() == 0:
            return out
        if encoded is None:
            encoded = self._encode_negatives(side, negs)
        anchor_rows = flat // k
        span = negs.meta.get("anchor_span")
        if span is not None:
            s = self._span_scores(side, span.to(self.device).flatten(0, 1)[flat], anchor_rows, encoded, emb_a, emb_b)
        elif side == 0:
            s = self.model.score_pairs(encoded, emb_b[anchor_rows])
        else:
            s = self.model.score_pairs(emb_a[anchor_rows], encoded)
        slots = _matched_slots(negs)
        if slots is not None and slots.numel():
            s = self._matched_scores(side, negs, flat, slots, s, emb_a, emb_b, matched)
        centre = negs.meta.get("centre_on_others")
        if centre is not None:
            centred = centre.to(self.device).flatten()[flat]
            if bool(centred.any()):
                s = torch.where(centred, s - self._others_offset(side, anchor_rows, encoded, emb_a, emb_b,
                                                                 grad_scores), s)
        return out.flatten().index_put((flat,), s).view(b, k)

    def _matched_inputs(self, negs: Negatives, slots: Tensor) -> Any:
        """Model inputs of the look-matched positives at the flattened [B, K] ``slots`` Long[M]."""
        inputs = flatten_inputs(negs.meta["matched_positive"])
        return to_device(index_inputs(inputs, slots.to(negs.valid.device)), self.device)

    def _matched_scores(self, side: int, negs: Negatives, flat: Tensor, slots: Tensor, s: Tensor, emb_a: Embedding,
                        emb_b: Embedding, matched: Embedding | None) -> Tensor:
        """Float[V]: the valid negatives' scores ``s`` (flattened slots ``flat`` Long[V]), those with a look-matched
        positive (``slots`` Long[M], a subset of ``flat``) replaced by ``score(negative) - score(matched positive) +
        score(own positive)``. The hinge ``margin - positive + score`` then compares the negative with the positive
        drawn the same way (the positive's own score cancels), so a look that the generator's drawing gives every
        image it touches, the matched positive's too, cannot meet the margin; and the loss raises the matched
        positive's score against its anchor, so the look stops counting as a reason to score an image low."""
        if matched is None:
            matched = self.model.encode(side, self._matched_inputs(negs, slots))
        k = negs.valid.shape[1]
        rows = slots.to(self.device) // k
        s_matched = (self.model.score_pairs(matched, emb_b[rows]) if side == 0
                     else self.model.score_pairs(emb_a[rows], matched))
        s_own = self.model.score_pairs(emb_a[rows], emb_b[rows])
        where = torch.searchsorted(flat, slots.to(flat.device))  # both ascending; slots is a subset of flat
        return s.index_put((where,), s[where] - s_matched + s_own)

    def _others_offset(self, side: int, anchor_rows: Tensor, encoded: Embedding, emb_a: Embedding, emb_b: Embedding,
                       grad_scores: tuple[Tensor, Tensor]) -> Tensor:
        """Float[V] for negatives with ``meta["centre_on_others"]`` (see :class:`negmine.Negatives`): per valid
        negative, its mean score against the batch's other anchors minus its positive's mean score against the same
        anchors. Subtracted from the negative's score, the hinge compares the two by their scores against their own
        anchor relative to how each scores against everyone else's, so a look that every negative of a kind shares
        (a GAN edit's softness, say), which lowers its score for every anchor alike, cannot meet the margin: only
        what the negative changed for its own anchor can. Both parts keep their gradient: the loss then moves the
        negative and its positive apart only where they differ (a negative equal to its positive gets none), where
        with the positive's part detached it raised the near-identical pair's scores against every other anchor
        together, and the scores grew without bound (4,200 at step 20 on Audio CLEVRGAN, where the plain row scores
        17). The other anchors include pairs of the same content group as the negative's anchor."""
        if self.dist.enabled:
            raise PluginError("meta['centre_on_others'] is not supported with several processes yet: the batch's "
                              "other anchors are one process's rows")
        if side == 0:  # image-side negatives of caption anchors: each against every caption of the batch
            against = self.model.score_matrix(encoded, emb_b)  # [V, B]
        else:
            against = self.model.score_matrix(emb_a, encoded).T  # [V, B]
        positives = grad_scores[1 - side][anchor_rows]  # [V, B]: the anchor's positive against the same anchors
        others = torch.ones_like(against, dtype=torch.bool)
        others[torch.arange(len(anchor_rows), device=against.device), anchor_rows] = False
        count = others.sum(1).clamp_min(1)
        return ((against - positives) * others).sum(1) / count

    def _span_scores(self, side: int, span: Tensor, anchor_rows: Tensor, encoded: Embedding, emb_a: Embedding,
                     emb_b: Embedding) -> Tensor:
        """Scores of span-localized negatives (``meta["anchor_span"]``, see :class:`negmine.Negatives`), Float[V] for
        the V valid slots: the negative scored against the anchor's frames in its span only, minus the positive
        scored on the same frames, plus the positive's full score. The triplet hinge ``margin - positive + score``
        then compares positive and negative on the span alone (the full positive cancels), so the loss pushes the
        negative away on the frames the edit falsifies (the word it changed) and leaves the rest of the anchor's
        sequence, still true of the negative, alone."""
        anchor_emb, other = (emb_b, emb_a) if side == 0 else (emb_a, emb_b)
        anchors = anchor_emb[anchor_rows]
        if anchors.values.dim() != 3:
            raise PluginError(f"negatives of side {side} carry meta['anchor_span'], but their anchors (side {1 - side}) "
                              f"are not sequences Float[N, D, T] (got {tuple(anchors.values.shape)})")
        window = span_view(anchors, span)
        positives = other[anchor_rows]
        if side == 0:
            s_neg, s_pos = self.model.score_pairs(encoded, window), self.model.score_pairs(positives, window)
            s_full = self.model.score_pairs(positives, anchors)
        else:
            s_neg, s_pos = self.model.score_pairs(window, encoded), self.model.score_pairs(window, positives)
            s_full = self.model.score_pairs(anchors, positives)
        return s_neg - s_pos + s_full

    def _encode_negatives(self, side: int, negs: Negatives) -> Embedding:
        """Encode the valid negatives of one record in a pass of their own; a model that cannot encode them (inputs
        of another shape or dtype than the task's) is a mistake of the generator, named with what was expected."""
        inputs = self._negative_inputs(side, negs)
        try:
            return self.model.encode(side, inputs)
        except Exception as exc:
            gen = self.active.get(negs.source)
            who = gen.describe() if gen is not None else f"generator {negs.source!r}"
            expected = _shapes(self.task.train.side_batch(side, torch.arange(1)), drop=1)
            raise PluginError(
                f"{who} returned {negs.kind.value} negatives for side {side} that the model cannot encode: "
                f"{_shapes(inputs, drop=1)} per negative, while the task's side-{side} inputs are {expected} per "
                f"item ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc

    def _watch_collapse(self, scores: Tensor, metrics: dict[str, Any]) -> None:
        """Warn when every score in the batch converges to one value (embedding collapse): a spread below 5% of the
        margin, where the hinge sees every pair alike (each term ~ margin) and recall falls to chance; a run of
        Hard Neg on Audio CLEVRGAN collapsed to a spread of 0.002-0.06 with margin 1 within 20 steps, healthy runs
        stay above 0.4 from the first steps."""
        if self.dist.enabled:  # every rank decides on the global batch's spread, so they agree
            std = dist_utils.global_batch_stats(scores.new_zeros(()), scores.new_zeros(1), scores)["score_std"]
        else:
            std = float(scores.std()) if scores.numel() > 1 else 0.0
        metrics["score_std"] = std
        scale = max(1.0, float(scores.abs().mean()))
        self._collapse_count = self._collapse_count + 1 if std < max(1e-3 * scale, 0.05 * self.config.margin) else 0
        if self._collapse_count >= COLLAPSE_PATIENCE and not self._collapse_warned:
            self._collapse_warned = True
            if any("hard" in name for name in self.stage.negatives) and self.stage.init_optimizer:
                # measured on Audio CLEVRGAN: Hard Neg from DaveNet's step 800 with its Adam state collapsed in 2 of
                # 4 seeds, with a fresh Adam in none (docs/concepts.md)
                advice = ("this stage continues its init checkpoint's optimizer state (init_optimizer), whose Adam "
                          "second moments were shaped by a gentler loss: the hard negatives' larger gradients then "
                          "move many weights by more than lr per step, the same way, for many steps (update_per_lr "
                          "jumps). Set init_optimizer = false, or warm the lr up (warmup_steps).")
            elif any("hard" in name for name in self.stage.negatives) and any(
                    group == ("random",) for group in self.stage.combine):
                advice = ("hardest negatives often do this, even next to this stage's random group. Use "
                          "strategy=semihard, a lower learning rate, or warm-start (init) from a random-negatives stage.")
            elif any("hard" in name for name in self.stage.negatives):
                advice = ("hardest negatives often do this. Add a random group (combine = [[\"random\"], "
                          "[\"hard-minibatch\"]]), use strategy=semihard, or warm-start (init).")
            else:
                advice = ("every pair scores alike, so the loss cannot tell positives from negatives. From scratch "
                          "this can be a plateau that training leaves later (a higher learning rate or Adam shortens "
                          "it); after a warm start it is a collapse.")
            if self.dist.is_main:  # once, not once per rank
                self.reporter.warn(f"scores collapsed (std {std:.2e} over the batch for {COLLAPSE_PATIENCE} steps, stage "
                               f"{self.stage.name!r}): {advice}")

    def _watch_dead_units(self, embeddings: tuple[Embedding, Embedding], metrics: dict[str, Any]) -> None:
        """Log ``side{s}/live_units`` (the fraction of the D embedding units non-zero for some item and position of
        the batch) and warn when it stays below DEAD_UNITS_FRACTION: ReLU units that died (typically a ReLU after
        the last layer) leave the model a few dimensions to embed with."""
        for side, emb in enumerate(embeddings):
            values = emb.values.detach()
            live = values.transpose(0, 1).reshape(values.shape[1], -1).ne(0).any(1).float().mean()
            fraction = float(live)
            metrics[f"side{side}/live_units"] = fraction
            self._dead_units_count[side] = self._dead_units_count[side] + 1 if fraction < DEAD_UNITS_FRACTION else 0
            if self._dead_units_count[side] >= COLLAPSE_PATIENCE and not self._dead_units_warned[side]:
                self._dead_units_warned[side] = True
                d = values.shape[1]
                self.reporter.warn(
                    f"only {round(fraction * d)} of the {d} units of side {side}'s embedding were non-zero over a "
                    f"whole batch for {COLLAPSE_PATIENCE} steps (stage {self.stage.name!r}): dead ReLUs. A ReLU after "
                    "the tower's last layer, a high learning rate or a negative bias drift cause it; the model then "
                    "embeds with a few dimensions."
                )

    # ------------------------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, split: str = "val", size: int | None = None) -> dict[str, Any]:
        """Recall@1/5/10 in both directions on the first ``size`` pairs of a split, plus plugins' metrics."""
        data = {"val": self.task.val, "test": self.task.test, "train": self.task.train}[split]
        if data is None:
            raise ConfigError([f"task {self.task.name!r} has no {split} split"])
        metrics = evaluate_retrieval(self.model, data, size or self.config.eval_size, self.device,
                                     batch_size=self.config.batch_size)
        stage = self.config.stages[min(self.stage_index, len(self.config.stages) - 1)].name
        metrics = {"split": split, "step": self.global_step, "stage": stage, **metrics}
        if self.plugins:
            self.plugins.evaluate(self, split, metrics)
        return metrics

    def evaluate_and_track(self) -> dict[str, Any]:
        metrics = self.evaluate("val")
        self.history.append(metrics)
        self._append_metrics({"event": "eval", **metrics})
        self.reporter.log(f"eval step {self.global_step}: {_recall_line(metrics)}")
        if metrics[BEST_METRIC] > self.best["score"]:
            self.best = {"score": metrics[BEST_METRIC], "step": self.global_step, "stage": self.stage.name}
            self.save_checkpoint(self.run_dir / "checkpoints" / "best.pt")
        return metrics

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoints and files
    # ------------------------------------------------------------------------------------------------------------

    def _prepare_run_dir(self) -> None:
        if (self.run_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(
                [f"run directory {str(self.run_dir)!r} already holds a run; pass --resume to continue it, "
                 "or choose another --run-dir"]
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2, default=str) + "\n")
        (self.run_dir / "metrics.jsonl").write_text("")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as tensors and plain values."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": ckpt.FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "stage_index": self.stage_index,
            "stage_name": self.stage.name if self.stage_index < len(self.config.stages) else "",
            "step_in_stage": self.step_in_stage,
            "global_step": self.global_step,
            "data": {"epoch": self.data.epoch, "cursor": self.data.cursor},
            "rng": rng,
            "generators": {name: gen.state_dict() for name, gen in self.active.items()},
            "best": dict(self.best),
            "initial": {k: v for k, v in self.initial.items() if isinstance(v, (int, float, str))},
            "history": [{k: v for k, v in h.items() if isinstance(v, (int, float, str))} for h in self.history],
            "config": json.dumps(self.config.to_dict(), default=str),
        }

    def save_checkpoint(self, path: Path) -> None:
        if self.dist.is_main:
            ckpt.save_atomic(self.state_dict(), path)

    def _load_resume_state(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        if not path.exists():
            raise CheckpointError(
                f"cannot resume {str(self.run_dir)!r}: it has no checkpoints/last.pt yet (the run stopped before its "
                "first checkpoint); start it again without --resume, in a new --run-dir"
            )
        state = ckpt.load(path, map_location="cpu")
        saved = json.loads(state["config"])
        for stage in saved.get("stages") or ():  # stage keys added later take their defaults in older checkpoints
            stage.setdefault("group_weights", [1.0] * len(stage.get("combine") or ()))
            stage.setdefault("init_optimizer", False)
            stage.setdefault("group_weights_start", [])
            stage.setdefault("group_weights_ramp", 0)
        mine = json.loads(json.dumps(self.config.to_dict(), default=str))
        _same_init_files_as(saved, mine)
        differs = sorted(k for k in saved if k not in ("device", "run_dir") and saved.get(k) != mine.get(k))
        if "stages" in differs and len(saved.get("stages") or ()) == len(mine.get("stages") or ()):
            differs.remove("stages")  # name the stage keys instead
            for i, (old, new) in enumerate(zip(saved["stages"], mine["stages"], strict=True)):
                differs += [f"stages[{i}].{k} ({old.get(k)!r}, now {new.get(k)!r})"
                            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if differs:
            raise CheckpointError(
                f"cannot resume {str(self.run_dir)!r}: the configuration differs from the run's in {', '.join(differs)}"
            )
        self.model.load_state_dict(state["model"])
        self.stage_index = state["stage_index"]
        self.step_in_stage = state["step_in_stage"]
        self.global_step = state["global_step"]
        self.data = _DataCursor(**state["data"])
        self.best = dict(state["best"])
        self.initial = dict(state.get("initial", {}))
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.stage_index < len(self.config.stages) and self.step_in_stage > 0:
            self._pending_state = state
        self.resumed = True
        # metrics after the checkpoint were never confirmed: drop them so the file matches an uninterrupted run
        self._truncate_metrics(self.global_step)

    def _truncate_metrics(self, step: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists() or not self.dist.is_main:
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def _append_metrics(self, metrics: Mapping[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(_plain(metrics), sort_keys=True) + "\n")

    def _write_summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        summary = {
            "task": self.task.name,
            "steps": self.global_step,
            "stages": [s.name for s in self.config.stages],
            "best": self.best,
            "initial": _plain(self.initial),
            "final": _plain(last),
            "evaluations": [_plain(h) for h in self.history],
            "run_dir": str(self.run_dir),
        }
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def mining_context(batch: Any, embeddings: tuple[Embedding, Embedding], candidates: tuple[Embedding, Embedding],
                   scores: tuple[Tensor, Tensor], positive: Tensor, candidate_ids: Tensor, candidate_groups: Tensor,
                   model: Any, task: Any, step: int, margin: float, device: torch.device) -> MiningContext:
    """The step's detached :class:`MiningContext`: all the trainer builds only for generators.

    scores: (Float[B, N], Float[B, N]) as the loss uses them (in one process side a is a transposed view: it is not
    copied, and no B x N exclusion mask is built; generators that need them ask the context, which builds them once).
    """
    return MiningContext(
        batch=batch,
        embeddings=(embeddings[0].detach(), embeddings[1].detach()),
        candidates=(candidates[0].detach(), candidates[1].detach()),
        scores=(scores[0].detach(), scores[1].detach()),
        positive=positive,
        exclude=None,  # built from the ids and groups on first use, if a generator asks for the mask
        candidate_ids=candidate_ids,
        candidate_groups=None if batch.groups is None else candidate_groups,  # None: the ids are the groups
        unique_ids=True,  # a batch is drawn from a permutation of the training split
        false_negatives=split_false_negatives(getattr(task, "train", None), batch.ids, candidate_ids, device),
        model=model,
        task=task,
        step=step,
        margin=margin,
        device=device,
    )


@torch.no_grad()
def encode_split(model: Any, data: PairedDataset, size: int, device: torch.device, batch_size: int = 128):
    """Encode the first ``size`` pairs of a split: (Embedding a, Embedding b, groups Long[n]); the model's
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    n = min(size, len(data))
    parts_a, parts_b, groups = [], [], []
    for start in range(0, n, batch_size):
        batch = data.batch(torch.arange(start, min(n, start + batch_size))).to(device)
        parts_a.append(model.encode(0, batch.a))
        parts_b.append(model.encode(1, batch.b))
        groups.append(batch.group_ids)
    model.train(was_training)
    return Embedding.cat(parts_a), Embedding.cat(parts_b), torch.cat(groups)


@torch.no_grad()
def score_all(model: Any, a: Embedding, b: Embedding, block: int = 256) -> Tensor:
    """Float[Na, Nb] scores, computed in row blocks to bound memory."""
    return torch.cat([model.score_matrix(a[slice(i, i + block)], b) for i in range(0, len(a), block)])


@torch.no_grad()
def evaluate_retrieval(model: Any, data: PairedDataset, size: int, device: torch.device, batch_size: int = 128) -> dict:
    """Recall@1/5/10 both directions on the first ``size`` pairs of ``data``."""
    a, b, groups = encode_split(model, data, size, device, batch_size)
    scores = score_all(model, a, b)
    out = recall_at_k(scores, (1, 5, 10), groups=groups)
    out["n"] = len(a)
    return out


def _recall_line(m: Mapping[str, Any]) -> str:
    return (f"R@1 {m['mean@1']:.3f}  R@5 {m['mean@5']:.3f}  R@10 {m['mean@10']:.3f} "
            f"(mean of both directions, {m['n']} held-out pairs)")


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"device {device!r} requested but CUDA is not available on this machine; use --device cpu"])
    return device


def _shapes(obj: Any, drop: int = 0) -> str:
    """``float32[3, 8, 8]`` for a tensor without its first ``drop`` axes; tuples, lists and dicts of them in
    brackets (for messages)."""
    if isinstance(obj, Tensor):
        return f"{str(obj.dtype).replace('torch.', '')}{list(obj.shape[drop:])}"
    if isinstance(obj, (tuple, list)):
        return "(" + ", ".join(_shapes(o, drop) for o in obj) + ")"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_shapes(v, drop)}" for k, v in obj.items()) + "}"
    return type(obj).__name__


def _plain(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, Tensor):
            v = v.item() if v.numel() == 1 else v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        out[k] = v
    return out
