"""What the GAN-edit generators share: the editor of the task's GAN, positives regenerated from latents, telemetry."""

from __future__ import annotations

from typing import Any

import torch

from negmine import hookimpl
from negmine.generator import NegativeGenerator
from negmine_gan.edit import GanEditor, resolve_gan


def to_model_input(images: Any) -> Any:
    """GAN output Float[B, 3, R, R] in [-1, 1] -> Float[B, 3, R, R] in [0, 1]."""
    return (images.clamp(-1, 1) + 1) / 2


def tries_stats(tries: Any) -> dict[str, float]:
    """Telemetry of one batch's edits: mean tries and the histogram (``tries_hist/<t>``: edits accepted at try t)."""
    values, counts = tries.unique(return_counts=True)
    stats = {"tries_mean": float(tries.float().mean())}
    stats.update({f"tries_hist/{int(v)}": float(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)})
    return stats


class GanEditGenerator(NegativeGenerator):
    """Base of generators that draw negatives by editing ``options.layer`` of the task's GAN.

    Subclasses set ``last_stats`` (logged with every step's metrics). A subclass that overrides a hook method calls
    the base's and marks its override ``@hookimpl`` again (pluggy markers are not inherited by overrides).
    """

    def __init__(self, options: Any = None, *, seed: int = 0, task: Any = None) -> None:
        super().__init__(options, seed=seed, task=task)
        self.editor: GanEditor | None = None
        self.last_stats: dict[str, float] = {}
        self._last_generated: tuple[Any, Any, Any] | None = None  # (z, layer features, images) of the positives

    def _editor(self) -> GanEditor:
        if self.editor is None:
            self.editor = GanEditor(resolve_gan(self.task), self.options.layer)
        return self.editor

    @hookimpl
    def negmine_stage_start(self, trainer: Any, stage: Any) -> None:
        # positives are regenerated from their latents as floats, so quantisation cannot tell them from edits
        data = trainer.task.train
        if hasattr(data, "use_generated_positives"):
            data.use_generated_positives(lambda z: to_model_input(self.generate_with_features(z)[1]))

    def generate_with_features(self, z: Any) -> tuple[Any, Any]:
        """(layer features Float[B, C, h, w], images Float[B, 3, R, R] in GAN space) of latents Float[B, Z].

        The positives of a step are generated when the batch is loaded and again by ``mine`` for the same latents;
        the last result is kept, so the GAN runs once per step for them (it dominates a step's time on a CPU)."""
        last = self._last_generated
        if last is not None and last[0].shape == z.shape and last[0].device == z.device and torch.equal(last[0], z):
            return last[1], last[2]
        editor = self._editor()
        with torch.no_grad():
            feats = editor.features(z)
            images = editor.generate(z, features=feats)
        self._last_generated = (z.detach().clone(), feats, images)
        return feats, images

    @hookimpl
    def negmine_step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        for key, value in self.last_stats.items():
            metrics[f"{self.name}/{key}"] = value
