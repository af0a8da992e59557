"""Every hook a negmine plugin can implement, grouped by when it runs.

A plugin is a module or object with functions marked ``@negmine.hookimpl`` whose names match the specs below. Shipped
plugins and third-party packages register through the ``negmine`` entry-point group; a local module or ``.py`` file can be
loaded with ``negmine -p``. Hooks are always called with keyword arguments, so an implementation may accept any subset
of the documented arguments, in any order.

Registration hooks are called once when the plugin manager is first asked for generators, tasks or commands; their
implementations should import heavy modules (torch, faiss) *inside* the function body so that ``negmine --help`` and
``negmine plugins`` stay fast.

Lifecycle hooks are called by :class:`negmine.Trainer` on every registered plugin module *and* on every active generator
instance (the trainer registers the generator objects of the running stage with the plugin manager), so a stateful
generator, such as a FAISS index that must be refreshed, implements them as methods.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "negmine"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------------


@hookspec
def negmine_register_generators() -> list[type]:
    """Return negative-generator classes (subclasses of :class:`negmine.NegativeGenerator`).

    Called: once per plugin manager, the first time generators are listed or looked up by name.
    Returns: a list of classes; each class's ``name`` must be unique across all plugins (a duplicate is an error that
    names both classes).
    """


@hookspec
def negmine_register_tasks() -> list[Any]:
    """Return task specifications (:class:`negmine.TaskSpec`): a name, named profiles and a builder for model + data.

    Called: once per plugin manager, the first time tasks are listed or looked up by name.
    Returns: a list of ``TaskSpec``; names must be unique across all plugins.
    """


@hookspec
def negmine_register_commands() -> list[Any]:
    """Return click commands to add to the ``negmine`` command line.

    Called: lazily, when the ``negmine`` command line first needs the list of commands (``--help``, or a name that
    is not built in), and again by ``negmine plugins`` to list what each plugin adds; return the same objects each
    time (module-level commands, or commands built inside the hook).
    Returns: a list of ``click.Command``. A ``click.Group`` whose name matches an existing group is merged into it, so
    several plugins can add subcommands to ``negmine data`` (e.g. ``negmine data build <task>``).
    """


# --------------------------------------------------------------------------------------------------------------------
# Training lifecycle (called by negmine.Trainer)
# --------------------------------------------------------------------------------------------------------------------


@hookspec
def negmine_train_start(trainer: Any) -> None:
    """Training is about to begin (fresh or resumed).

    Called: once per ``Trainer.fit()``, after the model, data and checkpoint (if resuming) are loaded, before the first
    stage starts. ``trainer.resumed`` says whether this run continues from a checkpoint.
    """


@hookspec
def negmine_stage_start(trainer: Any, stage: Any) -> None:
    """A curriculum stage begins (also when a stage is resumed part-way).

    Called: at the start of every stage, after that stage's generators are built, restored from the checkpoint when
    resuming, and registered as plugins, and before its first step. ``stage`` is the :class:`negmine.StageConfig`;
    ``trainer.step_in_stage`` is 0 for a fresh stage and the resumed position otherwise. Stateful generators (indexes,
    concept clusters) build their state here.
    """


@hookspec
def negmine_step_end(trainer: Any, step: int, metrics: dict) -> None:
    """One optimisation step finished.

    Called: after every optimiser step, with ``step`` the global step just completed (1-based) and ``metrics`` the dict
    that will be logged for this step (loss, per-source telemetry); implementations may add keys to it. Periodic work
    such as index refreshes every N steps belongs here.
    """


@hookspec
def negmine_evaluate(trainer: Any, split: str, metrics: dict) -> None:
    """An evaluation ran on a held-out split.

    Called: after the trainer computed recall@k on ``split`` (``"val"`` during training), with ``metrics`` holding those
    numbers; implementations may add their own keys (e.g. an edit gallery path, an attribute-test score).
    """


@hookspec
def negmine_stage_end(trainer: Any, stage: Any, metrics: dict) -> None:
    """A stage finished: its final evaluation is in ``metrics`` and its checkpoint has been written.

    Called: once per stage, after the stage checkpoint is saved and before the stage's generators are unregistered.
    """


@hookspec
def negmine_train_end(trainer: Any, summary: dict) -> None:
    """Training finished (all stages done).

    Called: once, after ``summary.json`` is written; ``summary`` is the dict that was written.
    """
