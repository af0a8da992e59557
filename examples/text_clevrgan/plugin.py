"""negmine plugin of the text–image example: the ``text-clevrgan`` task (torch loads inside the hook's builder)."""

from __future__ import annotations

from negmine import hookimpl


@hookimpl
def negmine_register_tasks():
    from negmine import TaskSpec

    from .task import OPTIONS, PROFILE_HELP, build_task

    return [
        TaskSpec(
            name="text-clevrgan",
            build=build_task,
            profiles=PROFILE_HELP,
            description="Written captions vs CLEVR-like GAN images (per-token text maps, MISA matchmaps): the "
            "GAN-edit generators reused on another cross-modal task.",
            options=OPTIONS,
        )
    ]
