"""The ``negmine`` command line: a thin click group; heavy imports happen inside commands.

``negmine --help`` imports neither torch nor any generator module: plugins' registration hooks import their heavy code
lazily, and the commands below import the library only when they run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from negmine.errors import NegmineError

_ARGV: list[str] | None = None
PLUGIN_OPTION_HELP = "load a plugin: an importable module name or a path to a .py file (repeatable)"


class _Obj:
    def __init__(self, plugins: tuple[str, ...]) -> None:
        self.plugins = plugins
        self._pm = None

    @property
    def pm(self) -> Any:
        if self._pm is None:
            from negmine.plugins import get_plugin_manager

            self._pm = get_plugin_manager(self.plugins)
        return self._pm


def _prescan_plugins(argv: list[str]) -> tuple[str, ...]:
    """-p values before the subcommand, needed to list plugin commands before click parses anything."""
    found = []
    it = iter(argv)
    for arg in it:
        if arg in ("-p", "--plugin"):
            found.append(next(it, ""))
        elif arg.startswith("--plugin="):
            found.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            break
    return tuple(f for f in found if f)


def get_obj(ctx: click.Context) -> _Obj:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = _Obj(tuple(root.params.get("plugins") or ()))
    return root.obj


def plugin_manager(ctx: click.Context | None = None) -> Any:
    """The :class:`negmine.PluginManager` of the running ``negmine`` command: the entry-point plugins plus those given
    with ``-p`` before the command. For commands that plugins add (``negmine_register_commands``): a task or
    generator registered by a ``-p`` file is known to it, where a fresh ``negmine.get_plugin_manager()`` would lack
    it. ``ctx`` defaults to the current click context."""
    return get_obj(ctx or click.get_current_context()).pm


def _merge_command(group: click.Group, cmd: click.Command) -> None:
    """Add ``cmd`` to ``group``; a group with an existing group's name is merged into it recursively."""
    existing = group.commands.get(cmd.name)
    if existing is cmd:
        return
    if isinstance(existing, click.Group) and isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _merge_command(existing, sub)
    elif existing is not None:
        raise NegmineError(f"command {cmd.name!r} is defined twice (by negmine or two plugins)")
    else:
        group.add_command(cmd)


class NegmineGroup(click.Group):
    """The root group: built-in commands plus every plugin's commands, loaded on first use."""

    _plugins_loaded = False

    def _load_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        obj = get_obj(ctx)
        if not obj.plugins:
            obj.plugins = _prescan_plugins(_ARGV if _ARGV is not None else sys.argv[1:])
        for _plugin, cmd in obj.pm.commands():
            _merge_command(self, cmd)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands:
            self._load_plugin_commands(ctx)
        return super().get_command(ctx, name)


@click.group(cls=NegmineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-p", "--plugin", "plugins", multiple=True, help=PLUGIN_OPTION_HELP)
@click.version_option(package_name="negmine", prog_name="negmine")
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...]) -> None:
    """Train dual encoders with a triplet loss where the negatives come from plugins.

    \b
    Quick start:
      negmine plugins                         # what is installed
      negmine train --task toy                # train on the built-in toy task
      negmine train run.toml --negatives random --negatives hard-minibatch --hard-minibatch-strategy semihard
      negmine eval runs/<run>                 # recall@k and the task's evaluations

    Plugins load from the `negmine` entry points; NEGMINE_PLUGINS (allow-list) and NEGMINE_DISABLE_PLUGINS
    (block-list) filter them.
    """
    if ctx.obj is None:
        ctx.obj = _Obj(plugins)


def _register_builtin() -> None:
    from negmine.cli.commands import eval_command, experiment_command, plugins_command, train_command

    cli.add_command(train_command)
    cli.add_command(eval_command)
    cli.add_command(experiment_command)
    cli.add_command(plugins_command)


_register_builtin()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: user mistakes print one message and exit non-zero, without a traceback."""
    global _ARGV
    _ARGV = list(argv) if argv is not None else None
    cli._plugins_loaded = False
    try:
        cli.main(args=argv, prog_name="negmine", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; the trainer keeps its last atomic checkpoint
        click.echo("interrupted: the last checkpoint is kept; continue with `negmine train --resume RUN_DIR`", err=True)
        return 130
    except NegmineError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
