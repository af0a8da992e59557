"""Drawn negatives: GAN edits guided by the model's own matchmaps (``gan-random``; task-agnostic GAN editing API)."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_gan.random_edit import GanRandomEdits

    return [GanRandomEdits]
