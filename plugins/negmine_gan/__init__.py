"""Drawn negatives: GAN edits guided by the model's own matchmaps (``gan-random``, ``gan-targeted``; a task-agnostic GAN editing API)."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_gan.random_edit import GanRandomEdits
    from negmine_gan.targeted import GanTargetedEdits

    return [GanRandomEdits, GanTargetedEdits]
