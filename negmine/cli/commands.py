"""Built-in commands: ``train``, ``eval`` and ``plugins``. The library is imported inside each command."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from negmine.config import build_task, build_task_config, parse_key_values
from negmine.errors import ConfigError, NegmineError

# --------------------------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------------------------

_CLICK_TYPES = {"int": click.INT, "float": click.FLOAT, "str": click.STRING, "bool": click.BOOL}


class TrainCommand(click.Command):
    """``negmine train`` with one ``--<generator>-<option>`` flag per option of every installed generator."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return super().get_params(ctx) + self.generator_params(ctx)[0]

    def generator_params(self, ctx: click.Context) -> tuple[list[click.Parameter], dict[str, tuple[str, str]]]:
        """The generated flags and a map from their parameter names to (generator, option); cached per run."""
        from negmine.cli import get_obj
        from negmine.generator import option_specs

        obj = get_obj(ctx)
        cached = getattr(obj, "_train_flags", None)
        if cached is not None:
            return cached
        params: list[click.Parameter] = []
        flag_map: dict[str, tuple[str, str]] = {}
        for gen_name, cls in sorted(obj.pm.generators().items()):
            for spec in option_specs(cls.Options):
                flag = f"--{gen_name}-{spec['name']}".replace("_", "-")
                dest = f"genopt_{len(flag_map)}"
                flag_map[dest] = (gen_name, spec["name"])
                kind = click.Choice(spec["choices"]) if spec["choices"] else _CLICK_TYPES.get(spec["type"], click.STRING)
                lo, hi = spec["min"], spec["max"]
                bounds = f" [{'' if lo is None else lo}..{'' if hi is None else hi}]" if (lo, hi) != (None, None) else ""
                help_text = f"{gen_name}: {spec['help']} (default: {spec['default']}){bounds}"
                params.append(click.Option([flag, dest], type=kind, default=None, help=help_text))
        obj._train_flags = (params, flag_map)
        return obj._train_flags


@click.command("train", cls=TrainCommand)
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--task", help="task name (default: toy)")
@click.option("--profile", help="task profile (default: the task's first)")
@click.option("--negatives", "-n", multiple=True, help="negative source (repeatable); replaces the config's list")
@click.option("--combine", multiple=True, help="one group of sources, comma-separated (repeatable)")
@click.option("--steps", type=click.IntRange(min=1), help="steps of the single stage")
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="learning rate")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]))
@click.option("--margin", type=click.FloatRange(min=0))
@click.option("--reduction", help="per anchor and group: hardest (the hardest negative's hinge) or mean (the mean "
              "over all: batch-all); one word, or one per --combine group, comma-separated")
@click.option("--group-weights", help="per --combine group: the factor of its loss terms; one number, or one per "
              "group, comma-separated (e.g. 1,0.5)")
@click.option("--group-weights-start", help="the group weights at each stage's first step, moving linearly to "
              "--group-weights over --group-weights-ramp steps (e.g. 1,0 fades the second group in)")
@click.option("--group-weights-ramp", type=click.IntRange(min=0), help="steps over which the group weights move from "
              "--group-weights-start to --group-weights")
@click.option("--negative-encoding", type=click.Choice(["joint", "joint-clean", "separate"]),
              help="encode input and dataset-id negatives in one pass with the batch (joint, the default: BatchNorm "
              "cannot tell them apart; joint-clean: and that pass leaves BatchNorm's running statistics to the "
              "batch's own pairs) or in a pass of their own")
@click.option("--seed", type=int)
@click.option("--device", help="cpu, cuda, cuda:N or auto")
@click.option("--eval-every", type=click.IntRange(min=0))
@click.option("--eval-size", type=click.IntRange(min=1))
@click.option("--checkpoint-every", type=click.IntRange(min=0))
@click.option("--log-every", type=click.IntRange(min=1))
@click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE", help="task option (repeatable)")
@click.option("--run-dir", type=click.Path(file_okay=False), help="run directory (default: runs/<task>-<time>)")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="continue the run in this directory")
@click.option("--compare-with", "compare_with", multiple=True, type=click.Path(file_okay=False),
              help="a run directory of the same task (repeatable, finished or still training): warn at each "
                   "validation that is 20 or more points of R@10 below its (their median's) value at that step")
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
@click.pass_context
def train_command(ctx: click.Context, config_file: str | None, **kw: Any) -> None:
    """Train a dual encoder. CONFIG_FILE is an optional TOML file; flags override it.

    Every option of every installed generator is a flag: --<generator>-<option>, e.g. --hard-minibatch-strategy.
    """
    from negmine.cli import get_obj
    from negmine.config import merge, read_config_file
    from negmine.console import make_reporter
    from negmine.trainer import Trainer

    pm = get_obj(ctx).pm
    flag_map = ctx.command.generator_params(ctx)[1]
    gen_flags = {k: kw.pop(k) for k in list(kw) if k.startswith("genopt_")}
    resume_dir = kw.pop("resume_dir")
    quiet = kw.pop("quiet")
    compare_with = kw.pop("compare_with")

    if resume_dir:
        extra = [k for k, v in kw.items() if v not in (None, ()) and k != "device"]
        extra += [flag_map[k][0] for k, v in gen_flags.items() if v is not None]
        if config_file or extra:
            raise NegmineError("--resume continues a run with its saved config.json; only --device and --compare-with "
                               "may be given with it")
        saved = Path(resume_dir) / "config.json"
        if not saved.is_file():
            raise NegmineError(f"cannot resume: {str(saved)!r} does not exist (is {resume_dir!r} a run directory?)")
        file_layer = read_config_file(saved)
        file_layer["run_dir"] = resume_dir
        cli_layer = {"device": kw["device"]} if kw.get("device") else {}
    else:
        file_layer = read_config_file(config_file) if config_file else {}
        cli_layer = _cli_layer(kw, gen_flags, flag_map)
        if file_layer.get("stages"):
            single = [f"--{k.replace('_', '-')}" for k in ("steps", "negatives", "combine") if k in cli_layer]
            if single:
                raise ConfigError([f"{', '.join(single)} set(s) the single stage, but {config_file} defines "
                                   "[[stages]]: change the stages in the file instead"])
            # generator flags override the file everywhere, stage tables included
            for stage in file_layer["stages"]:
                if isinstance(stage, dict) and isinstance(stage.get("generators", {}), dict):
                    stage["generators"] = merge({"generators": stage.get("generators", {})},
                                                {"generators": cli_layer.get("generators", {})})["generators"]
    raw = merge(file_layer, cli_layer)
    task = build_task(pm, raw)
    config = build_task_config(pm, task, raw, source=config_file or "command line")
    references = _reference_curves(compare_with, task.name)
    from negmine.distributed import init_from_env, shut_down_when_done

    info = init_from_env(config.device)  # a no-op unless launched by torchrun
    quiet = quiet or not info.is_main  # one console: rank 0's
    with shut_down_when_done():
        trainer = Trainer(task, config, plugins=pm, resume=bool(resume_dir), reporter=make_reporter(quiet))
        if references and info.is_main:
            _watch_for_a_slow_start(pm, str(trainer.run_dir), references, quiet)
        summary = trainer.fit()
    if not quiet:
        init, final = summary.get("initial") or {}, summary.get("final") or {}
        click.echo(f"done: {summary['steps']} steps; results in {summary['run_dir']}")
        if init and final:
            for k in ("mean@1", "mean@5", "mean@10"):
                click.echo(f"  val recall {k}: {init[k]:.3f} -> {final[k]:.3f}")


def _watch_for_a_slow_start(pm: Any, label: str, references: dict[str, dict[int, float]], quiet: bool) -> None:
    """Register a :class:`negmine.experiment.SlowStartWatch` of the run against ``--compare-with``'s runs: the
    warning goes to stderr even with ``--quiet``, since it asks for a decision while the run trains."""
    from negmine.experiment import SlowStartWatch

    pm.register(SlowStartWatch(label, references, lambda m: click.echo(m, err=True), noun="run",
                               consequence="a comparison with it will mostly measure this start"),
                name="slow-start-watch")
    if not quiet:
        for run, curve in references.items():
            steps = ", ".join(str(k) for k in sorted(curve) if k > 0)
            click.echo(f"comparing validation R@10 with {run} at its steps {steps}", err=True)


def _reference_curves(run_dirs: tuple[str, ...], task_name: str) -> dict[str, dict[int, float]]:
    """``--compare-with``: each run directory's validation R@10 per step (see
    :func:`negmine.experiment.run_validation_curve`). Every unusable directory is named in one error: missing, not
    a run directory, another task, or no validation after step 0 yet."""
    from negmine.config import read_config_file
    from negmine.experiment import run_validation_curve

    curves: dict[str, dict[int, float]] = {}
    problems: list[str] = []
    for run in run_dirs:
        path = Path(run)
        if not (path / "config.json").is_file():
            problems.append(f"{run}: not a run directory (no config.json)" if path.is_dir() else f"{run}: no such directory")
            continue
        other_task = read_config_file(path / "config.json").get("task")
        curve = run_validation_curve(path)
        if other_task is not None and other_task != task_name:
            problems.append(f"{run}: a run of task {other_task!r}, not {task_name!r}")
        elif not any(step > 0 for step in curve):
            problems.append(f"{run}: no validation evaluation after step 0 yet (its first is still to come)")
        else:
            curves[run] = curve
    if problems:
        raise NegmineError("--compare-with cannot use:\n  " + "\n  ".join(problems))
    return curves


def _cli_layer(kw: dict[str, Any], gen_flags: dict[str, Any], flag_map: dict[str, tuple[str, str]]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key in ("task", "profile", "steps", "batch_size", "lr", "optimizer", "margin", "seed", "device", "eval_every",
                "eval_size", "checkpoint_every", "log_every", "run_dir", "negative_encoding"):
        if kw.get(key) is not None:
            layer[key] = kw[key]
    if kw.get("negatives"):
        layer["negatives"] = list(kw["negatives"])
    if kw.get("combine"):
        layer["combine"] = [[s.strip() for s in group.split(",") if s.strip()] for group in kw["combine"]]
    if kw.get("reduction"):
        words = [w.strip() for w in kw["reduction"].split(",")]
        layer["reduction"] = words[0] if len(words) == 1 else words
    for key in ("group_weights", "group_weights_start"):
        if kw.get(key):
            try:
                numbers = [float(w) for w in kw[key].split(",")]
            except ValueError:
                raise click.BadParameter(f"expected numbers separated by commas, got {kw[key]!r}",
                                         param_hint="--" + key.replace("_", "-")) from None
            layer[key] = numbers[0] if len(numbers) == 1 else numbers
    if kw.get("group_weights_ramp") is not None:
        layer["group_weights_ramp"] = kw["group_weights_ramp"]
    options = parse_key_values(kw.get("task_options") or (), "--task-option")
    if options:
        layer["task_options"] = options
    gens: dict[str, dict[str, Any]] = {}
    for dest, value in gen_flags.items():
        if value is not None:
            gen, opt = flag_map[dest]
            gens.setdefault(gen, {})[opt] = value
    if gens:
        layer["generators"] = gens
    return layer


# --------------------------------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------------------------------


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", default="test", type=click.Choice(["val", "test"]), show_default=True)
@click.option("--checkpoint", default="best", show_default=True, help="best, last, stage-<name>, or a .pt path")
@click.option("--size", type=click.IntRange(min=1), help="pairs to evaluate (default: the whole split, capped by eval_size)")
@click.option("--device", default="auto", show_default=True)
@click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE",
              help="override a task option of the run (repeatable), e.g. data_dir=... after moving the data")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.pass_context
def eval_command(ctx: click.Context, run_dir: str, split: str, checkpoint: str, size: int | None, device: str,
                 task_options: tuple[str, ...], as_json: bool) -> None:
    """Evaluate a run: recall@1/5/10 both ways, then every evaluation the task provides.

    Writes RUN_DIR/eval-<split>.json and RUN_DIR/report-<split>.md.
    """
    from negmine.cli import get_obj
    from negmine.evaluate import evaluate_run

    results, report = evaluate_run(get_obj(ctx).pm, Path(run_dir), split=split, checkpoint=checkpoint, size=size,
                                   device=device, task_options=parse_key_values(task_options, "--task-option"))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(report)
        figures = sorted(p.name for p in Path(run_dir).glob("fig-*.png"))
        click.echo(f"\nreport written to {Path(run_dir) / f'report-{split}.md'} (results: eval-{split}.json"
                   + (f"; figures: {', '.join(figures)}" if figures else "") + ")")


# --------------------------------------------------------------------------------------------------------------------
# experiment
# --------------------------------------------------------------------------------------------------------------------


@click.command("experiment")
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="directory of the runs and results")
@click.option("--seed", "seeds", multiple=True, type=int, help="only these seeds (repeatable; default: the file's)")
@click.option("--method", "methods", multiple=True,
              help="only this method and the methods its init chain starts from (repeatable; default: all)")
@click.option("--ledger", type=click.Path(file_okay=False),
              help="a directory (small JSON files, fit to commit) that records every finished run; runs found there "
                   "are not trained again and count in the results")
@click.option("--report-only", is_flag=True, help="write the tables of the finished runs; train nothing")
@click.option("--re-evaluate", is_flag=True,
              help="evaluate the finished runs in --out again (e.g. after an evaluation changed) and replace their "
                   "ledger evaluations; nothing finished is retrained")
@click.option("--retrain", "retrain", multiple=True, metavar="METHOD",
              help="train this method again although the ledger records it (repeatable; also give it to --method), "
                   "e.g. on another machine so that its siblings trained there pair with it; a different run "
                   "replaces the record, which is kept for the runs trained from it or compared with it")
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def experiment_command(ctx: click.Context, experiment_file: str, out: str, seeds: tuple[int, ...],
                       methods: tuple[str, ...], ledger: str | None, report_only: bool, re_evaluate: bool,
                       retrain: tuple[str, ...], quiet: bool) -> None:
    """Train and evaluate several methods x seeds (init chains, equal budgets); resumable; writes results.md."""
    from negmine.cli import get_obj
    from negmine.console import make_reporter
    from negmine.experiment import load_experiment, provenance, run_experiment

    if report_only and re_evaluate:
        raise click.UsageError("--report-only and --re-evaluate exclude each other (--report-only evaluates nothing)")
    if retrain and (report_only or re_evaluate):
        raise click.UsageError("--retrain trains; it excludes --report-only and --re-evaluate")
    if retrain and not ledger:
        raise click.UsageError("--retrain trains a method the ledger records again: it needs --ledger")
    exp = load_experiment(experiment_file)
    command = " ".join(["negmine", *(shlex.quote(a) for a in sys.argv[1:])])
    ledger_dir = Path(ledger) if ledger else None
    run_experiment(get_obj(ctx).pm, exp, Path(out), lambda: make_reporter(quiet),
                   log=lambda m: click.echo(m, err=True), only_seeds=list(seeds) or None,
                   only_methods=list(methods) or None, header=lambda: provenance(command, ledger_dir),
                   ledger=ledger_dir, train=not report_only, re_evaluate=re_evaluate, retrain=list(retrain))
    click.echo((Path(out) / "results.md").read_text())


# --------------------------------------------------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------------------------------------------------


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins: distribution, version, generators (with every option), tasks and commands."""
    from negmine.cli import get_obj

    described = get_obj(ctx).pm.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140, highlight=False)
    for plugin in described:
        dist = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else plugin["origin"]
        console.print(f"[bold]{plugin['name']}[/]  ({dist}; module {plugin['module']})", soft_wrap=True)
        for gen in plugin["generators"]:
            console.print(f"  generator [cyan]{gen['name']}[/]: {gen['doc']}", soft_wrap=True)
            if gen["requires"]:
                console.print(f"    requires from the task: {', '.join(gen['requires'])}", soft_wrap=True)
            if gen["options"]:
                table = Table(show_header=True, box=None, padding=(0, 2), pad_edge=False)
                table.add_column("flag", no_wrap=True)
                table.add_column("type", no_wrap=True)
                table.add_column("default", no_wrap=True)
                table.add_column("help")
                for opt in gen["options"]:
                    flag = f"--{gen['name']}-{opt['name']}".replace("_", "-")
                    kind = "|".join(map(str, opt["choices"])) if opt["choices"] else opt["type"]
                    if opt["min"] is not None or opt["max"] is not None:  # inclusive bounds, as the flags check
                        kind += f" [{'' if opt['min'] is None else opt['min']}..{'' if opt['max'] is None else opt['max']}]"
                    table.add_row(flag, kind, str(opt["default"]), opt["help"])
                console.print(table)
        for task in plugin["tasks"]:
            console.print(f"  task [green]{task['name']}[/]: {task['description']}", soft_wrap=True)
            for prof, desc in task["profiles"].items():
                console.print(f"    profile {prof}: {desc}", soft_wrap=True)
        for cmd in plugin["commands"]:
            console.print(f"  command: negmine {cmd}")
