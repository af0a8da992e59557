"""What the GAN-edit generators share: the editor of the task's GAN, positives regenerated from latents, telemetry."""

from __future__ import annotations

from typing import Any

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

    def _editor(self) -> GanEditor:
        if self.editor is None:
            self.editor = GanEditor(resolve_gan(self.task), self.options.layer)
        return self.editor

    @hookimpl
    def negmine_stage_start(self, trainer: Any, stage: Any) -> None:
        # positives are regenerated from their latents as floats, so quantisation cannot tell them from edits
        data = trainer.task.train
        if hasattr(data, "use_generated_positives"):
            editor = self._editor()
            data.use_generated_positives(lambda z: to_model_input(editor.generate(z)))

    @hookimpl
    def negmine_step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        for key, value in self.last_stats.items():
            metrics[f"{self.name}/{key}"] = value
