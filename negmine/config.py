"""Training configuration: frozen attrs records, read from TOML (or JSON), layered with task defaults and CLI flags.

Precedence, lowest first: built-in defaults < the task profile's defaults < the config file < command-line flags.
Validation collects *every* problem before raising one :class:`~negmine.errors.ConfigError`.

A config file::

    task = "toy"
    profile = "default"
    steps = 400
    negatives = ["random", "hard-minibatch"]
    combine = [["random"], ["hard-minibatch"]]      # default: every source its own group
    reduction = "hardest"                          # per group: hardest negative, or mean over all; or a list

    [generators.hard-minibatch]                    # options of one generator (also --hard-minibatch-<option>)
    strategy = "semihard"
    # NAME:LABEL in negatives is one more instance of a generator, with its own options (here, not the table above),
    # its own random stream and its own telemetry keys: negatives = ["random", "hard-minibatch", "hard-minibatch:all"]
    # [generators."hard-minibatch:all"]

    [[stages]]                                     # optional curriculum; without it one stage is built from the keys above
    name = "warmup"
    steps = 200
    negatives = ["random"]

    [[stages]]
    name = "hard"
    steps = 200
    negatives = ["random", "hard-minibatch"]
    init = "previous"                              # or a path to a run directory / checkpoint file
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomllib

from negmine.errors import ConfigError, closest

# a source is a registered generator's name, or NAME:LABEL for one more instance of it with options of its own
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def generator_name(source: str) -> str:
    """The registered generator behind a source name: ``"hard-minibatch:semihard"`` -> ``"hard-minibatch"``."""
    return source.partition(":")[0]


def _source_problem(source: str, generators: Mapping[str, type]) -> str | None:
    """What is wrong with a source name (an unknown generator with the closest known one, a malformed label)."""
    base, colon, label = source.partition(":")
    if base not in generators:
        hint = closest(base, generators)
        return (f"unknown generator {base!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; known: {', '.join(sorted(generators))}")
    if colon and (not label or not set(label) <= _LABEL_CHARS):
        return (f"{source!r}: the label after ':' must be letters, digits, '_' or '-' (one more instance of "
                f"{base!r} with options of its own, e.g. '{base}:second')")
    return None


@attrs.frozen
class StageConfig:
    """One curriculum stage: which sources, how they combine, how long, and where its weights start."""

    name: str
    steps: int
    negatives: tuple[str, ...]
    combine: tuple[tuple[str, ...], ...]
    init: str = "previous"
    generators: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    lr: float | None = None
    reduction: tuple[str, ...] = ()  # per group of ``combine``: "hardest" or "mean" (empty: hardest everywhere)
    group_weights: tuple[float, ...] = ()  # per group of ``combine``: the factor of its loss terms (empty: all 1)
    init_optimizer: bool = False  # with init = a checkpoint: also load its optimizer state (moments, step counts)
    negative_encoding: str = "joint"  # see _TOP_FIELDS["negative_encoding"]
    # per group: the factor at the stage's first step, moving linearly to group_weights over group_weights_ramp
    # steps (empty or a ramp of 0: group_weights from the first step)
    group_weights_start: tuple[float, ...] = ()
    group_weights_ramp: int = 0

    @property
    def ramps(self) -> bool:
        """Whether the group weights move during the stage (a start and a ramp of at least one step)."""
        return bool(self.group_weights_ramp and self.group_weights_start)

    def group_weights_at(self, step_in_stage: int) -> tuple[float, ...]:
        """The group weights of the stage's step ``step_in_stage`` (0-based): ``group_weights_start`` at step 0,
        ``group_weights`` from step ``group_weights_ramp`` on, linear in between; empty when neither is set."""
        if not self.ramps:
            return self.group_weights
        end = self.group_weights or (1.0,) * len(self.group_weights_start)
        t = min(1.0, step_in_stage / self.group_weights_ramp)
        return tuple(a + (b - a) * t for a, b in zip(self.group_weights_start, end, strict=True))


_TOP_FIELDS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    # name: (type, default, help)
    "task": (str, "toy", "task name (see `negmine plugins`)"),
    "profile": ((str, type(None)), None, "task profile (default: the task's first)"),
    "seed": (int, 0, "random seed for model init, data order and generators"),
    "device": (str, "auto", "cpu, cuda, cuda:N or auto"),
    "batch_size": (int, 64, "pairs per step (per process under torchrun)"),
    "steps": (int, 500, "optimisation steps of the single stage (ignored when [[stages]] is given)"),
    "negatives": (list, ["random"], "negative sources of the single stage"),
    "combine": ((list, type(None)), None, "groups of sources; default: each source its own group"),
    "margin": (float, 1.0, "triplet margin (beta)"),
    "reduction": ((str, list), "hardest", "per anchor and group: hardest (the hinge of the hardest valid negative, "
                  "the paper) or mean (the mean hinge over all valid negatives: batch-all); one word for every group "
                  "or a list with one per group"),
    "group_weights": ((int, float, list), 1.0, "per group of combine: the factor of its loss terms; one number for "
                      "every group or a list with one per group (e.g. [1.0, 0.5])"),
    "group_weights_start": ((int, float, list, type(None)), None, "per group of combine: the factor of its loss "
                            "terms at the stage's first step, moving linearly to group_weights over "
                            "group_weights_ramp steps (e.g. [1.0, 0.0] fades the second group in)"),
    "group_weights_ramp": (int, 0, "steps over which the group weights move from group_weights_start to "
                           "group_weights, counted from the start of each stage (0: no ramp)"),
    "negative_encoding": (str, "joint", "how negatives given as inputs or dataset ids (GAN edits, corpus negatives) go "
                          "through the encoder: joint (in one forward pass with the batch's side they replace, so "
                          "BatchNorm normalises positives and negatives alike), joint-clean (the same, but that pass "
                          "leaves BatchNorm's running statistics alone: they follow the batch's own pairs only, the "
                          "data evaluation sees) or separate (a pass of their own: a BatchNorm model can then tell them "
                          "apart by their batch's statistics, which exist only in training, and the hinge falls to "
                          "zero without learning their content)"),
    "optimizer": (str, "sgd", "sgd, adam or adamw"),
    "lr": (float, 1e-3, "learning rate"),
    "momentum": (float, 0.9, "SGD momentum"),
    "weight_decay": (float, 5e-7, "weight decay"),
    "lr_decay": (float, 0.1, "multiply the lr by this every lr_decay_every steps"),
    "lr_decay_every": (int, 0, "step-decay period in steps (0: constant lr)"),
    "lr_schedule_start": (int, 0, "the first stage's step decay counts from this step, not 0: a run initialised from "
                          "another run's step N continues that run's schedule (experiments set it for init chains)"),
    "warmup_steps": (int, 0, "linear lr warm-up steps at the start of each stage"),
    "grad_clip": (float, 0.0, "clip the gradient norm to this (0: off)"),
    "eval_every": (int, 0, "evaluate every N steps (0: only at stage ends)"),
    "eval_size": (int, 500, "held-out pairs used for recall@k during training"),
    "checkpoint_every": (int, 100, "write last.pt every N steps (0: only at stage ends)"),
    "log_every": (int, 10, "console/metrics line every N steps"),
    "run_dir": ((str, type(None)), None, "where the run is written (default: runs/<task>-<time>)"),
    "generators": (dict, {}, "per-generator options: {name: {option: value}}"),
    "task_options": (dict, {}, "task-specific options (see the task's docs)"),
    "stages": ((list, type(None)), None, "curriculum stages ([[stages]] tables)"),
}
_STAGE_KEYS = {"name", "steps", "negatives", "combine", "init", "generators", "lr", "reduction", "group_weights",
               "group_weights_start", "group_weights_ramp", "init_optimizer", "negative_encoding"}
NEGATIVE_ENCODINGS = ("joint", "joint-clean", "separate")


def _check_negative_encoding(where: str, value: Any, problems: list[str]) -> str:
    if value in NEGATIVE_ENCODINGS:
        return value
    hint = closest(str(value), NEGATIVE_ENCODINGS)
    problems.append(f"{where}negative_encoding: expected one of {', '.join(NEGATIVE_ENCODINGS)}, got {value!r}"
                    + (f" (did you mean {hint!r}?)" if hint else ""))
    return "joint"


@attrs.frozen
class TrainConfig:
    """The fully resolved configuration of one run (what ``config.json`` in a run directory holds)."""

    task: str
    profile: str | None
    seed: int
    device: str
    batch_size: int
    margin: float
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    lr_decay: float
    lr_decay_every: int
    lr_schedule_start: int
    warmup_steps: int
    grad_clip: float
    eval_every: int
    eval_size: int
    checkpoint_every: int
    log_every: int
    run_dir: str | None
    generators: Mapping[str, Mapping[str, Any]]
    task_options: Mapping[str, Any]
    stages: tuple[StageConfig, ...]

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=True)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (or JSON, e.g. a run's ``config.json``) config file into a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {str(path)!r} does not exist"], source=str(path))
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot parse: {exc}"], source=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a table"], source=str(path))
    return data


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge config dicts; later layers win; ``generators`` and ``task_options`` merge per key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("generators", "task_options") and isinstance(value, Mapping):
                base = dict(out.get(key) or {})
                for sub, subval in value.items():
                    if key == "generators" and isinstance(subval, Mapping):
                        base[sub] = {**dict(base.get(sub) or {}), **dict(subval)}
                    else:
                        base[sub] = subval
                out[key] = base
            else:
                out[key] = value
    return out


def _check_type(name: str, value: Any, kind: type | tuple[type, ...], problems: list[str]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    if isinstance(value, bool) and bool not in kinds:
        problems.append(f"{name}: expected {_kind_name(kinds)}, got {value!r}")
        return False
    if not isinstance(value, kinds):
        problems.append(f"{name}: expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        return False
    return True


def _kind_name(kinds: Sequence[type]) -> str:
    names = {"str": "a string", "int": "an integer", "float": "a number", "list": "a list", "dict": "a table",
             "NoneType": "nothing"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


REDUCTIONS = ("hardest", "mean")


def _check_reduction(where: str, value: Any, groups: int, problems: list[str]) -> tuple[str, ...]:
    """A reduction word or a list of one per group -> one per group (problems appended, never raised)."""
    words = [value] * groups if isinstance(value, str) else value
    if not isinstance(words, list) or len(words) != groups:
        problems.append(f"{where}reduction: expected {' or '.join(REDUCTIONS)}, or a list of {groups} (one per group of "
                        f"combine), got {value!r}")
        return ("hardest",) * groups
    for word in dict.fromkeys(w for w in words if w not in REDUCTIONS):
        hint = closest(str(word), REDUCTIONS)
        problems.append(f"{where}reduction: unknown {word!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                        + "; choose hardest or mean")
    return tuple(w if w in REDUCTIONS else "hardest" for w in words)


def _check_group_weights(where: str, value: Any, groups: int, problems: list[str],
                         key: str = "group_weights") -> tuple[float, ...]:
    """A number or a list of one per group (each >= 0) -> one per group (problems appended, never raised)."""
    numbers = [value] * groups if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if (not isinstance(numbers, list) or len(numbers) != groups
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in numbers)):
        problems.append(f"{where}{key}: expected a number >= 0, or a list of {groups} (one per group of "
                        f"combine), got {value!r}")
        return (1.0,) * groups
    return tuple(float(x) for x in numbers)


def _check_ramp(where: str, start: Any, ramp: Any, groups: int, problems: list[str]) -> tuple[tuple[float, ...], int]:
    """group_weights_start and group_weights_ramp -> (start per group or (), ramp steps); problems appended."""
    if not isinstance(ramp, int) or isinstance(ramp, bool) or ramp < 0:
        problems.append(f"{where}group_weights_ramp: expected an integer >= 0 (steps), got {ramp!r}")
        ramp = 0
    if start is None or (isinstance(start, (list, tuple)) and not start):  # a run's config.json writes unset as []
        if ramp:
            problems.append(f"{where}group_weights_ramp: {ramp} steps, but from what? Give group_weights_start (the "
                            "weights at the stage's first step)")
        return (), 0
    before = len(problems)
    weights = _check_group_weights(where, start, groups, problems, key="group_weights_start")
    if len(problems) == before and not ramp:
        problems.append(f"{where}group_weights_start: needs group_weights_ramp > 0 (the steps over which the weights "
                        "move to group_weights)")
    return weights, ramp


def _check_combine(where: str, negatives: Sequence[str], combine: Any, problems: list[str]) -> tuple:
    if combine is None:
        return tuple((n,) for n in negatives)
    if not isinstance(combine, list) or not all(isinstance(g, list) and g for g in combine):
        problems.append(f"{where}combine: expected a list of non-empty lists of source names, got {combine!r}")
        return ()
    seen: set[str] = set()
    for group in combine:
        for name in group:
            if name not in negatives:
                problems.append(f"{where}combine: {name!r} is not one of this stage's negatives {list(negatives)}")
            if name in seen:
                problems.append(f"{where}combine: {name!r} appears in more than one group")
            seen.add(name)
    for name in negatives:
        if name not in seen:
            problems.append(f"{where}combine: source {name!r} is in negatives but in no group (it would be unused)")
    return tuple(tuple(g) for g in combine)


def check_generator_options(
    where: str, gen_name: str, values: Mapping[str, Any], known: Mapping[str, type], problems: list[str]
) -> None:
    """Check option names and values of one generator against its Options class; every problem of the table is
    appended (an unknown name with the closest known one, a value of the wrong type, outside its bounds or not one of
    its choices with the closest choice), and only a table without such problems is built, so that the Options
    class's own checks of combinations (``__attrs_post_init__``) are reported too."""
    cls = known.get(generator_name(gen_name))
    if cls is None:
        return  # unknown generator names are reported where they are used
    options_cls = cls.Options
    fields = {f.name: f for f in attrs.fields(options_cls)}
    before = len(problems)
    for key, value in values.items():
        field = fields.get(key)
        if field is None:
            hint = closest(key, fields)
            problems.append(
                f"{where}generators.{gen_name}: unknown option {key!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; options: {', '.join(fields) or '(none)'}"
            )
            continue
        problem = option_value_problem(field, value)
        if problem:
            problems.append(f"{where}generators.{gen_name}.{key}: {problem}")
    if len(problems) == before:
        try:
            make_options(cls, values)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}generators.{gen_name}: {_exception_text(exc)}")


def option_value_problem(field: Any, value: Any) -> str | None:
    """What is wrong with one value of a generator option declared with :func:`negmine.option` (its type, bounds and
    choices), or None."""
    meta = field.metadata.get("negmine", {})
    kind = meta.get("type") or type(field.default)
    if value is None:
        return None if field.default is None else f"expected {kind.__name__}, got nothing"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind in (int, float, str, bool) and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        return f"expected {kind.__name__}, got {type(value).__name__} {value!r}"
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = closest(str(value), [str(c) for c in choices])
        return (f"{value!r} is not one of {', '.join(map(str, choices))}"
                + (f" (did you mean {hint!r}?)" if hint else ""))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        return f"must be >= {lo}, got {value!r}"
    if hi is not None and value > hi:
        return f"must be <= {hi}, got {value!r}"
    return None


def _exception_text(exc: BaseException) -> str:
    """The message of an exception; attrs validators raise ValueError(message, attribute, ...), whose str() is the
    whole tuple."""
    first = exc.args[0] if exc.args else ""
    return first if isinstance(first, str) and first else str(exc)


def make_options(cls: type, values: Mapping[str, Any]) -> Any:
    """Build a generator's Options from plain values, converting ints to floats where the option is a float."""
    converted = {}
    for field in attrs.fields(cls.Options):
        if field.name not in values:
            continue
        value = values[field.name]
        kind = field.metadata.get("negmine", {}).get("type") or type(field.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind in (int, float, str, bool) and not isinstance(value, kind) and value is not None:
            raise TypeError(f"option {field.name!r} expects {kind.__name__}, got {type(value).__name__} {value!r}")
        converted[field.name] = value
    try:
        return cls.Options(**converted)
    except ValueError as exc:
        raise ValueError(_exception_text(exc)) from None


def build_config(raw: Mapping[str, Any], generators: Mapping[str, type], source: str = "configuration") -> TrainConfig:
    """Validate a merged config dict into a :class:`TrainConfig`, reporting every problem at once.

    generators: the registered generator classes by name (for names and option checks).
    """
    problems: list[str] = []
    for key in raw:
        if key not in _TOP_FIELDS:
            hint = closest(key, _TOP_FIELDS)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
    values: dict[str, Any] = {}
    for key, (kind, default, _help) in _TOP_FIELDS.items():
        value = raw.get(key, default)
        if _check_type(key, value, kind, problems):
            values[key] = float(value) if kind is float else value
        else:
            values[key] = default
    for key in ("batch_size", "log_every", "eval_size"):
        if isinstance(values[key], int) and values[key] < 1:
            problems.append(f"{key}: must be >= 1, got {values[key]}")
    for key in ("lr_decay_every", "lr_schedule_start", "warmup_steps", "eval_every", "checkpoint_every"):
        if isinstance(values[key], int) and values[key] < 0:
            problems.append(f"{key}: must be >= 0, got {values[key]}")
    if values["lr"] <= 0:
        problems.append(f"lr: must be > 0, got {values['lr']}")
    if values["margin"] < 0:
        problems.append(f"margin: must be >= 0, got {values['margin']}")
    if values["optimizer"] not in ("sgd", "adam", "adamw"):
        hint = closest(values["optimizer"], ("sgd", "adam", "adamw"))
        problems.append(
            f"optimizer: unknown {values['optimizer']!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            + "; choose sgd, adam or adamw"
        )

    def check_names(where: str, names: Any) -> tuple[str, ...]:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            problems.append(f"{where}negatives: expected a non-empty list of generator names, got {names!r}")
            return ()
        for n in names:
            problem = _source_problem(n, generators)
            if problem:
                problems.append(f"{where}negatives: {problem}")
        if len(set(names)) != len(names):
            problems.append(f"{where}negatives: a source is listed twice: {names}")
        return tuple(names)

    gen_opts = values["generators"]
    for gen_name, opts in gen_opts.items():
        problem = _source_problem(gen_name, generators)
        if problem:
            problems.append(f"generators: {problem}")
        elif not isinstance(opts, Mapping):
            problems.append(f"generators.{gen_name}: expected a table of options, got {opts!r}")
        else:
            check_generator_options("", gen_name, opts, generators, problems)

    stages: list[StageConfig] = []
    raw_stages = values["stages"]
    if raw_stages is None:
        names = check_names("", values["negatives"])
        combine = _check_combine("", names, values["combine"], problems)
        if values["steps"] < 1:
            problems.append(f"steps: must be >= 1, got {values['steps']}")
        reduction = _check_reduction("", values["reduction"], len(combine), problems)
        weights = _check_group_weights("", values["group_weights"], len(combine), problems)
        encoding = _check_negative_encoding("", values["negative_encoding"], problems)
        start, ramp = _check_ramp("", values["group_weights_start"], values["group_weights_ramp"], len(combine),
                                  problems)
        stages.append(StageConfig("main", values["steps"], names, combine, reduction=reduction, group_weights=weights,
                                  negative_encoding=encoding, group_weights_start=start, group_weights_ramp=ramp))
    else:
        if not raw_stages:
            problems.append("stages: give at least one [[stages]] table")
        seen_names: set[str] = set()
        for i, st in enumerate(raw_stages):
            where = f"stages[{i}]."
            if not isinstance(st, Mapping):
                problems.append(f"stages[{i}]: expected a table, got {st!r}")
                continue
            for key in st:
                if key not in _STAGE_KEYS:
                    hint = closest(key, _STAGE_KEYS)
                    problems.append(f"{where}{key}: unknown stage key" + (f" (did you mean {hint!r}?)" if hint else ""))
            name = st.get("name", f"stage{i + 1}")
            if not isinstance(name, str) or not name or "/" in name:
                problems.append(f"{where}name: expected a non-empty string without '/', got {name!r}")
                name = f"stage{i + 1}"
            if name in seen_names:
                problems.append(f"{where}name: stage name {name!r} is used twice")
            seen_names.add(name)
            steps = st.get("steps")
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
                problems.append(f"{where}steps: expected an integer >= 1, got {steps!r}")
                steps = 1
            names = check_names(where, st.get("negatives", values["negatives"]))
            combine = _check_combine(where, names, st.get("combine"), problems)
            init = st.get("init", "previous")
            if not isinstance(init, str):
                problems.append(f"{where}init: expected \"previous\" or a path, got {init!r}")
                init = "previous"
            elif init != "previous" and not Path(init).exists():
                problems.append(f"{where}init: {init!r} is neither \"previous\" nor an existing run dir or checkpoint")
            st_gens = st.get("generators", {})
            if not isinstance(st_gens, Mapping):
                problems.append(f"{where}generators: expected a table")
                st_gens = {}
            merged_gens = merge({"generators": gen_opts}, {"generators": st_gens})["generators"]
            for gen_name, opts in st_gens.items():
                problem = _source_problem(gen_name, generators)
                if problem:
                    problems.append(f"{where}generators: {problem}")
                elif isinstance(opts, Mapping):
                    check_generator_options(where, gen_name, merged_gens[gen_name], generators, problems)
            lr = st.get("lr")
            if lr is not None and (not isinstance(lr, (int, float)) or lr <= 0):
                problems.append(f"{where}lr: expected a number > 0, got {lr!r}")
                lr = None
            reduction = _check_reduction(where, st.get("reduction", values["reduction"]), len(combine), problems)
            weights = _check_group_weights(where, st.get("group_weights", values["group_weights"]), len(combine),
                                           problems)
            init_optimizer = st.get("init_optimizer", False)
            if not isinstance(init_optimizer, bool):
                problems.append(f"{where}init_optimizer: expected true or false, got {init_optimizer!r}")
                init_optimizer = False
            elif init_optimizer and init == "previous":
                problems.append(f"{where}init_optimizer: needs init = a checkpoint or run directory (the optimizer "
                                "state of the previous stage is kept anyway)")
                init_optimizer = False
            encoding = _check_negative_encoding(where, st.get("negative_encoding", values["negative_encoding"]),
                                                problems)
            start, ramp = _check_ramp(where, st.get("group_weights_start", values["group_weights_start"]),
                                      st.get("group_weights_ramp", values["group_weights_ramp"]), len(combine),
                                      problems)
            stages.append(StageConfig(name, steps, names, combine, init, merged_gens, lr, reduction, weights,
                                      init_optimizer, encoding, start, ramp))
    if problems:
        raise ConfigError(problems, source=source)
    if raw_stages is None:
        stages = [attrs.evolve(stages[0], generators=dict(gen_opts))]
    del values["steps"], values["negatives"], values["combine"], values["reduction"], values["group_weights"]
    del values["negative_encoding"], values["group_weights_start"], values["group_weights_ramp"]
    values["stages"] = tuple(stages)
    return TrainConfig(**values)


def config_help() -> dict[str, tuple[Any, str]]:
    """Top-level keys: name -> (default, help), for docs and the CLI reference."""
    return {k: (d, h) for k, (_t, d, h) in _TOP_FIELDS.items()}


# --------------------------------------------------------------------------------------------------------------------
# Building a run from a raw config dict: what the command line, the experiment runner and plugins share
# --------------------------------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A TOML value if it parses (numbers, booleans, lists), else the plain string: ``"3"`` -> 3, ``"l1"`` -> "l1"."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_key_values(items: Sequence[str], flag: str, dashes_to_underscores: bool = False) -> dict[str, Any]:
    """``KEY=VALUE`` strings (repeated ``--task-option`` or ``--option`` values) -> {key: typed value}.

    Values are parsed with :func:`parse_value`; ``dashes_to_underscores`` turns ``warm-start`` into ``warm_start``
    (generator option names). Every malformed item is reported at once, naming ``flag``."""
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        if "=" not in item:
            problems.append(f"{flag} {item!r}: expected KEY=VALUE")
            continue
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_") if dashes_to_underscores else key.strip()
        out[key] = parse_value(value.strip())
    if problems:
        raise ConfigError(problems)
    return out


def build_task(pm: Any, raw: dict[str, Any]) -> Any:
    """Build the task a raw config dict names: ``raw["task"]`` (default ``toy``) at ``raw["profile"]`` (default the
    task's first) with ``raw["task_options"]`` and ``raw["seed"]``, every unknown option reported with the closest
    known one. Sets ``raw["profile"]`` to the profile used, so the config built next records it.

    pm: a :class:`negmine.PluginManager` (the registered tasks). Returns the built :class:`negmine.Task`."""
    from negmine.errors import UnknownNameError

    spec = pm.task(raw.get("task") or "toy")
    profile = raw.get("profile") or spec.default_profile
    if profile not in spec.profiles:
        raise UnknownNameError(f"profile of task {spec.name!r}", profile, spec.profiles)
    options = dict(raw.get("task_options") or {})
    problems = []
    for key in options:
        if key not in spec.options:
            hint = closest(key, spec.options)
            problems.append(
                f"task_options: unknown option {key!r} of task {spec.name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; options: {', '.join(spec.options) or '(none)'}"
            )
    if problems:
        raise ConfigError(problems)
    raw["profile"] = profile
    return spec.build(profile=profile, seed=int(raw.get("seed", 0)), options=options)


def build_task_config(pm: Any, task: Any, raw: Mapping[str, Any], source: str = "configuration") -> TrainConfig:
    """The validated :class:`TrainConfig` of a raw config dict for a built task: the task profile's defaults under
    ``raw``, the generators and their options checked against those ``pm`` registers (every problem at once, the
    message naming ``source``)."""
    return build_config(merge({"task": task.name}, task.defaults, raw), pm.generators(), source=source)
