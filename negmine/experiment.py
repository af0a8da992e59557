"""Experiments: several methods x several seeds, with initialisation chains and equal training budgets.

An experiment file (TOML)::

    task = "audio-clevrgan"
    profile = "cpu"
    seeds = [0, 1, 2]
    total_steps = 3000                 # every method's chain must add up to this (no row wins by training longer)
    [settings]                         # config keys shared by every run (batch_size, lr, task_options, ...)
    eval_every = 500

    [[methods]]
    name = "DaveNet"
    negatives = ["random"]
    steps = 3000

    [[methods]]
    name = "Hard Neg"
    init = "DaveNet@1500"              # start from DaveNet's weights after 1500 steps (same seed)
    negatives = ["random", "hard-minibatch"]
    steps = 1500

    [[methods]]
    name = "HN+Edits"
    init = "Hard Neg@750"
    baseline = "Hard Neg"              # results.md adds its paired differences against Hard Neg (same seeds)
    ...

    [[methods]]
    name = "Hard Neg (warm-up)"
    init = "DaveNet@1500"
    negatives = ["random", "hard-minibatch"]
    steps = 1500
    settings = { warmup_steps = 100 }  # config keys of this method's runs only, over [settings]

A file may extend another and give only what differs (``extends = "other.toml"``, see
:func:`read_experiment_file`)::

    extends = "paper-cpu.toml"
    keep_methods = ["DaveNet", "Hard Neg"]    # optional: only these of its methods (default: all)
    [settings]
    task_options = { isolated_words = 0.2 }   # merged into the other file's task_options

A method's chain budget is its own steps plus its parent's steps at the init point. ``DaveNet@1500`` needs a
checkpoint of DaveNet at step 1500: the runner asks the parent run to keep one (``keep_steps``). Runs are resumable:
a finished run (``summary.json`` present) is skipped, an interrupted one resumes from ``last.pt``.

A *ledger* (a directory that may be committed: a few small JSON files per run, no checkpoints) lets an experiment
span machines or sessions whose run directories are lost: every finished run copies its evaluation, summary and
config there; a run found in the ledger is not trained again unless a child that has not finished needs its
checkpoint, and then the retrained run's numbers are compared with the ledger's (a reproducibility check). Each
record keeps the run's spec (:func:`run_spec`); a record whose spec no longer matches the experiment file is stale:
it does not count and is replaced when the run is trained again.

Training on a CPU is not bitwise reproducible across machines and code versions, and a retrained DaveNet can differ
from its record by several points; a child trained from the retrained run must then be paired with *that* run, not
with the record. So every run has a *lineage* (``lineage.json``: its identity, a digest of the validation
evaluations it logged while training, and the identities of the runs of its chain it started from). A retrained
run that differs from its record replaces it, and the record moves to ``earlier/<identity>/`` beside it: the
records trained from it keep pairing with it (:func:`paired_difference`), the new ones pair with the new run. The
records of the other methods of that seed (rows trained from scratch that pair with it, siblings) were compared with
the earlier run: their lineage's ``paired_with`` names it, and they keep pairing with it too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from negmine.config import config_help, merge, read_config_file
from negmine.errors import ConfigError, closest
from negmine.hookspecs import hookimpl

_TOP = {"task", "profile", "seeds", "total_steps", "settings", "methods", "metrics", "eval_split", "lr_schedule",
        "extends"}
LR_SCHEDULES = ("continue", "restart")
_METHOD = {"name", "negatives", "combine", "steps", "init", "generators", "stages", "lr", "reduction",
           "group_weights", "group_weights_start", "group_weights_ramp", "init_optimizer", "negative_encoding",
           "baseline", "settings"}
# config keys that the runner sets itself for every run, so a method's settings cannot
_RUNNER_KEYS = {"task", "profile", "seed", "stages", "run_dir", "steps", "negatives", "combine", "reduction",
                "group_weights", "group_weights_start", "group_weights_ramp", "negative_encoding",
                "lr_schedule_start"}


@attrs.frozen
class Method:
    name: str
    steps: int
    stages: tuple[dict[str, Any], ...]
    parent: str | None = None
    parent_step: int | None = None
    baseline: str | None = None  # results compare this method with the named one on the same seeds
    # config keys of this method's runs (not its children's), merged over the experiment's [settings]
    settings: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


@attrs.frozen
class Experiment:
    task: str
    profile: str | None
    seeds: tuple[int, ...]
    total_steps: int | None
    settings: Mapping[str, Any]
    methods: tuple[Method, ...]
    eval_split: str = "test"
    # continue: a method initialised from its parent's step N continues the parent's lr schedule from chain step N,
    # so at every chain step every row trains with the same lr; restart: each method starts the schedule anew
    lr_schedule: str = "continue"

    def method(self, name: str) -> Method:
        for m in self.methods:
            if m.name == name:
                return m
        raise ConfigError([f"unknown method {name!r}"])


# keys of a method that make up its single stage; a method gives these or a list of ``stages``, not both
_STAGE_KEYS = ("negatives", "combine", "generators", "lr", "reduction", "group_weights", "group_weights_start",
               "group_weights_ramp", "init_optimizer", "negative_encoding")


def _merge_method(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A method of an extending file over the base file's method of the same name: keys replace the base's, except
    ``generators`` (per generator, per option) and ``settings`` (per key, as :func:`negmine.config.merge`). Giving
    ``stages`` drops the base's single-stage keys, and giving a single-stage key drops the base's ``stages``."""
    out = dict(base)
    if "stages" in over:
        for key in _STAGE_KEYS:
            out.pop(key, None)
    if any(key in over for key in _STAGE_KEYS):
        out.pop("stages", None)
    for key, value in over.items():
        if key in ("generators", "settings") and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            merged = merge({"generators": out[key]}, {"generators": value})["generators"] if key == "generators" \
                else merge(out[key], value)
            out[key] = merged
        else:
            out[key] = value
    return out


def read_experiment_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """An experiment file's keys with its ``extends`` chain resolved (plain dict, not validated).

    ``extends = "other.toml"`` (a path relative to the file) starts from that file's resolved keys: top-level keys
    replace the base's; ``settings`` merges per key (``task_options`` and ``generators`` per option, as run
    configs do); a ``[[methods]]`` table whose name is one of the base's changes that method (see
    :func:`_merge_method`), a new name is added after the base's methods. ``keep_methods = [names]`` keeps only
    those of the base's methods (``[]``: none, e.g. for rows of a budget of their own). A missing base file, a cycle
    or a name in ``keep_methods`` that the base lacks is a :class:`ConfigError`."""
    path = Path(path)
    raw = read_config_file(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        if "keep_methods" in raw:
            raise ConfigError(["keep_methods: names methods of the file given by extends, and this file extends none"],
                              source=str(path))
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError([f"extends: expected the path of another experiment file, got {base_name!r}"],
                          source=str(path))
    base_path = (path.parent / base_name).resolve()
    chain = (*_chain, path.resolve())
    if base_path in chain:
        raise ConfigError([f"extends: cycle ({' -> '.join(p.name for p in (*chain, base_path))})"], source=str(path))
    if not base_path.is_file():
        raise ConfigError([f"extends: {base_name!r} does not exist (looked for {str(base_path)!r})"],
                          source=str(path))
    base = read_experiment_file(base_path, chain)
    keep = raw.pop("keep_methods", None)
    if keep is not None:
        base = {**base, "methods": _kept_methods(base.get("methods"), keep, base_name, path)}
    out = {k: v for k, v in base.items() if k not in ("settings", "methods")}
    out.update({k: v for k, v in raw.items() if k not in ("settings", "methods")})
    settings = raw.get("settings")
    if isinstance(settings, Mapping) and isinstance(base.get("settings"), Mapping):
        out["settings"] = merge(base["settings"], settings)
    elif "settings" in raw or "settings" in base:
        out["settings"] = raw.get("settings", base.get("settings"))
    methods = [dict(m) for m in base.get("methods") or [] if isinstance(m, Mapping)]
    if "methods" in raw:
        if not isinstance(raw["methods"], list):  # reported by the validation as the file's own problem
            out["methods"] = raw["methods"]
            return out
        index = {m.get("name"): i for i, m in enumerate(methods)}
        for m in raw["methods"]:
            if isinstance(m, Mapping) and m.get("name") in index:
                methods[index[m["name"]]] = _merge_method(methods[index[m["name"]]], m)
            else:
                methods.append(dict(m) if isinstance(m, Mapping) else m)
    if methods or "methods" in base:
        out["methods"] = methods
    return out


def _kept_methods(methods: Any, keep: Any, base_name: str, path: Path) -> list[Any]:
    """The base file's methods that ``keep_methods`` names, in the base's order; every name that is not one of them
    is reported at once (with the closest)."""
    methods = [m for m in methods or [] if isinstance(m, Mapping)]
    known = [m.get("name") for m in methods if isinstance(m.get("name"), str)]
    if not isinstance(keep, list) or not all(isinstance(n, str) for n in keep):
        raise ConfigError([f"keep_methods: expected a list of method names of {base_name!r}, got {keep!r}"],
                          source=str(path))
    problems = []
    for name in keep:
        if name not in known:
            hint = closest(name, known)
            problems.append(f"keep_methods: {name!r} is not a method of {base_name!r}"
                            + (f" (did you mean {hint!r}?)" if hint else ""))
    if problems:
        raise ConfigError(problems, source=str(path))
    return [m for m in methods if m.get("name") in keep]


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file (its ``extends`` chain resolved, see :func:`read_experiment_file`),
    reporting every problem at once."""
    raw = read_experiment_file(path)
    problems: list[str] = []
    for key in raw:
        if key not in _TOP:
            hint = closest(key, _TOP)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        problems.append(f"seeds: expected a non-empty list of integers, got {seeds!r}")
        seeds = [0]
    methods: list[Method] = []
    names: set[str] = set()
    config_keys = config_help()
    for i, m in enumerate(raw.get("methods") or []):
        where = f"methods[{i}]"
        for key in m:
            if key not in _METHOD:
                hint = closest(key, _METHOD)
                problems.append(f"{where}: unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
        name = m.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: a name is required")
            continue
        if name in names:
            problems.append(f"{where}: method name {name!r} is used twice")
        names.add(name)
        if "stages" in m:
            stages = tuple(dict(s) for s in m["stages"])
        else:
            stage = {k: m[k] for k in _STAGE_KEYS if k in m}
            stage.update(name="main", steps=m.get("steps", 0))
            stages = (stage,)
        steps = sum(int(s.get("steps", 0)) for s in stages)
        if steps < 1:
            problems.append(f"{where} ({name}): steps must be >= 1")
        parent = parent_step = None
        if "init" in m:
            init = str(m["init"])
            parent, _, at = init.partition("@")
            try:
                parent_step = int(at) if at else None
            except ValueError:
                problems.append(f"{where} ({name}): init {init!r} must be METHOD or METHOD@STEP")
        baseline = m.get("baseline")
        if baseline is not None and not isinstance(baseline, str):
            problems.append(f"{where} ({name}): baseline must be a method name, got {baseline!r}")
            baseline = None
        own_settings = m.get("settings", {})
        if not isinstance(own_settings, Mapping):
            problems.append(f"{where} ({name}): settings must be a table of config keys, got {own_settings!r}")
            own_settings = {}
        for key in own_settings:
            if key in _RUNNER_KEYS:
                problems.append(f"{where} ({name}): settings cannot set {key!r} (the runner or the method's own "
                                "keys set it)")
            elif key not in config_keys:
                hint = closest(key, sorted(set(config_keys) - _RUNNER_KEYS))
                problems.append(f"{where} ({name}): settings: unknown config key {key!r}"
                                + (f" (did you mean {hint!r}?)" if hint else ""))
        methods.append(Method(name, steps, stages, parent, parent_step, baseline, dict(own_settings)))
    if not methods:
        problems.append("methods: give at least one [[methods]] table")
    by_name = {m.name: m for m in methods}
    fixed = []
    for m in methods:
        if m.parent is not None:
            if m.parent not in by_name:
                hint = closest(m.parent, by_name)
                problems.append(f"method {m.name!r}: init names unknown method {m.parent!r}"
                                + (f" (did you mean {hint!r}?)" if hint else ""))
            else:
                ps = m.parent_step if m.parent_step is not None else by_name[m.parent].steps
                if not 0 < ps <= by_name[m.parent].steps:
                    problems.append(f"method {m.name!r}: init step {ps} is outside {m.parent!r}'s 1..{by_name[m.parent].steps}")
                m = attrs.evolve(m, parent_step=ps)
        if m.baseline is not None and (m.baseline not in by_name or m.baseline == m.name):
            hint = closest(m.baseline, [n for n in by_name if n != m.name])
            problems.append(f"method {m.name!r}: baseline names " + ("the method itself" if m.baseline == m.name
                            else f"unknown method {m.baseline!r}") + (f" (did you mean {hint!r}?)" if hint else ""))
        fixed.append(m)
    lr_schedule = raw.get("lr_schedule", "continue")
    if lr_schedule not in LR_SCHEDULES:
        hint = closest(str(lr_schedule), LR_SCHEDULES)
        problems.append(f"lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}"
                        + (f" (did you mean {hint!r}?)" if hint else ""))
        lr_schedule = "continue"
    exp = Experiment(raw.get("task", "toy"), raw.get("profile"), tuple(seeds), raw.get("total_steps"),
                     dict(raw.get("settings") or {}), tuple(fixed), raw.get("eval_split", "test"), lr_schedule)
    if not problems:
        for m in exp.methods:  # cycles
            chain, cur = [], m
            while cur.parent is not None:
                if cur.name in chain:
                    problems.append(f"method {m.name!r}: init chain has a cycle ({' -> '.join(chain)})")
                    break
                chain.append(cur.name)
                cur = by_name[cur.parent]
        if exp.total_steps is not None and not problems:
            for m in exp.methods:
                if chain_steps(exp, m) != exp.total_steps:
                    problems.append(f"method {m.name!r}: its chain trains {chain_steps(exp, m)} steps, but "
                                    f"total_steps is {exp.total_steps} (every row must get the same budget)")
    if problems:
        raise ConfigError(problems, source=str(path))
    return exp


def chain_steps(exp: Experiment, method: Method) -> int:
    """Total steps a method's weights have seen: its own plus its ancestors' up to each init point."""
    if method.parent is None:
        return method.steps
    parent = exp.method(method.parent)
    return chain_steps(exp, parent) - parent.steps + int(method.parent_step) + method.steps


def keep_steps(exp: Experiment, method: Method) -> list[int]:
    """Steps at which children initialise from this method (checkpoints to keep)."""
    return sorted({int(m.parent_step) for m in exp.methods if m.parent == method.name})


def order(exp: Experiment) -> list[Method]:
    """Methods with parents before children."""
    done: list[Method] = []
    pending = list(exp.methods)
    while pending:
        for m in list(pending):
            if m.parent is None or m.parent in {d.name for d in done}:
                done.append(m)
                pending.remove(m)
    return done


def with_ancestors(exp: Experiment, names: list[str]) -> list[Method]:
    """The named methods and every method their init chains start from, parents first (unknown names: one
    :class:`ConfigError` listing each, with the closest name)."""
    known = [m.name for m in exp.methods]
    problems = []
    for n in names:
        if n not in known:
            near = closest(n, known)
            problems.append(f"unknown method {n!r}" + (f" (did you mean {near!r}?)" if near else ""))
    if problems:
        raise ConfigError(problems + [f"methods of this experiment: {', '.join(known)}"])
    wanted: set[str] = set()
    for name in names:
        while name is not None and name not in wanted:
            wanted.add(name)
            name = exp.method(name).parent
    return [m for m in order(exp) if m.name in wanted]


LEDGER_FILES = ("eval-{split}.json", "summary.json", "config.json")


def ledger_runs_needed(exp: Experiment, methods: list[Method], finished: Mapping[str, bool],
                       in_out: Mapping[str, bool]) -> set[str]:
    """Names of the methods (of one seed) that must be trained in the run directory: those not finished anywhere,
    and the ancestors whose checkpoints they start from (unless those already sit finished in the run directory).

    methods: parents before children (:func:`order`); finished: evaluated in the run directory or the ledger;
    in_out: evaluated in the run directory."""
    must = set()
    for m in reversed(methods):  # children first, so a retrained child marks its parent in turn
        if not finished[m.name] or m.name in must:
            must.add(m.name)
            if m.parent is not None and not in_out.get(m.parent, False):
                must.add(m.parent)
    return must


def prefix_target(exp: Experiment, method: Method, must: set[str]) -> int | None:
    """The step a method recorded in the ledger needs to be retrained to: the latest init step of its children that
    train now (``must``), when that is before its end; None when it must train to the end (or has no such child).

    A run found in the ledger is retrained only for its children's checkpoints; when its retraining is the same run
    as the record up to that step (:func:`same_prefix`), the rest of it would only reproduce the record."""
    steps = [int(c.parent_step) for c in exp.methods
             if c.parent == method.name and c.name in must and c.parent_step is not None]
    if not steps or max(steps) >= method.steps:
        return None
    return max(steps)


def same_prefix(recorded: Mapping[str, Any], partial: Mapping[str, Any], step: int) -> tuple[bool, str]:
    """Whether a run retrained to ``step`` (``partial``: :meth:`Trainer.fit`'s summary at ``stop_at``) is the run of a
    ledger record (``recorded``: its ``summary.json``) so far: the evaluation before training and every validation
    evaluation up to ``step`` equal on every key the record has (the standard of :func:`run_identity`: the logged
    evaluations), and at least one of them after step 0. Returns (same, a short reason)."""
    def upto(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [summary.get("initial") or {}] + [e for e in summary.get("evaluations") or [] if e.get("step", 0) <= step]

    ours, theirs = upto(partial), upto(recorded)
    if not any(0 < e.get("step", 0) for e in theirs):
        # the evaluation before training says nothing about the training since: nothing to compare
        return False, f"no validation evaluation between step 0 and step {step} to compare"
    if len(ours) != len(theirs):
        return False, f"{len(theirs) - 1} recorded evaluations up to step {step}, {len(ours) - 1} retrained"
    for mine, rec in zip(ours, theirs, strict=True):
        plain = json.loads(json.dumps(mine))  # the record went through JSON
        differs = sorted(k for k in rec if plain.get(k) != rec[k])
        if differs:
            k = next((k for k in ("mean@10", "mean@1") if k in differs), differs[0])
            return False, f"step {rec.get('step', 0)}: {k} {plain.get(k)!r} retrained, {rec[k]!r} recorded"
    return True, f"{len(ours)} validation evaluations identical"


PREFIX = "prefix.json"


def _write_prefix(run_dir: Path, record: Path, step: int) -> None:
    """Mark a run directory trained to ``step`` as the ledger record's run: its lineage is the record's (so that
    the children trained from its checkpoints pair with the record), and ``prefix.json`` says how far it went."""
    lineage = read_lineage(record)
    _write_atomic(run_dir / LINEAGE, _json_text(lineage))
    _write_atomic(run_dir / PREFIX, _json_text({"step": step, "run": lineage["run"]}))


def prefix_ready(run_dir: Path, record: Path, exp: Experiment, method: Method, step: int) -> bool:
    """A run directory trained to at least ``step`` earlier, found to be the record's run (the record unchanged since),
    with the checkpoints its children start from up to ``step``."""
    path = run_dir / PREFIX
    if not path.exists():
        return False
    prefix = json.loads(path.read_text())
    if prefix.get("step", -1) < step or prefix.get("run") != read_lineage(record)["run"]:
        return False
    return all((run_dir / "checkpoints" / f"step-{s}.pt").exists() for s in keep_steps(exp, method) if s <= step)


def run_spec(exp: Experiment, method: Method, seed: int) -> dict[str, Any]:
    """What defines one run of an experiment (plain JSON): the shared settings, the method's stages, the seed, and
    the spec of the run it starts from with the step. A ledger record made under another spec is stale."""
    spec: dict[str, Any] = merge(exp.settings, method.settings,
                                 {"task": exp.task, "profile": exp.profile, "seed": seed,
                                  "stages": [dict(st) for st in method.stages]})
    if method.parent is not None:
        spec["init"] = {"step": method.parent_step, "lr_schedule": exp.lr_schedule,
                        "from": run_spec(exp, exp.method(method.parent), seed)}
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def ledger_state(ledger: Path | None, exp: Experiment, method: Method, seed: int) -> str:
    """"missing", "stale" (recorded under another spec, see :func:`run_spec`) or "ok" (also a record without a
    spec, written before records had one)."""
    if ledger is None:
        return "missing"
    record = ledger / method.slug / f"seed-{seed}"
    if not (record / f"eval-{exp.eval_split}.json").exists():
        return "missing"
    spec_path = record / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != run_spec(exp, method, seed):
        return "stale"
    return "ok"


def _spec_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two specs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new))
                for d in _spec_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".") or "(all)"]


LINEAGE = "lineage.json"


def run_identity(run_dir: Path) -> str | None:
    """A trained run's identity (16 hex digits): a digest of the steps and validation evaluations it logged while
    training (``summary.json``). A retrained run has the same identity only when its training was bitwise the same;
    evaluating it again does not change it. None without a summary."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    key = json.dumps({"steps": summary.get("steps"), "evaluations": summary.get("evaluations")}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def read_lineage(record: Path) -> dict[str, Any]:
    """``{"run": identity, "ancestors": {method name: identity}}`` of a run directory or ledger record (see the module
    docstring); a record written before lineages existed has its identity and the ancestors stamped on it since."""
    path = record / LINEAGE
    if path.exists():
        return json.loads(path.read_text())
    return {"run": run_identity(record), "ancestors": {}}


def _write_lineage(exp: Experiment, method: Method, seed: int, out: Path, run_dir: Path) -> None:
    """``run_dir/lineage.json`` of a finished run: its identity and those of the runs of its chain it started from,
    read from their run directories in ``out`` (where its init checkpoint came from)."""
    ancestors: dict[str, str] = {}
    if method.parent is not None:
        parent = read_lineage(out / exp.method(method.parent).slug / f"seed-{seed}")
        ancestors = {**parent["ancestors"], method.parent: parent["run"]}
    _write_atomic(run_dir / LINEAGE, _json_text({"run": run_identity(run_dir), "ancestors": ancestors}))


def descendants(exp: Experiment, name: str) -> list[Method]:
    """The methods whose init chains pass through ``name``."""
    found = []
    for m in exp.methods:
        parent = m.parent
        while parent is not None and parent != name:
            parent = exp.method(parent).parent
        if parent == name:
            found.append(m)
    return found


def _archive(ledger_dir: Path, name: str, old: str, later: list[tuple[Path, str | None]], split: str,
             others: list[Path] | None = None) -> None:
    """Move the record of run ``old`` of method ``name`` to ``earlier/<old>/`` and stamp the records of its
    descendants (``later``: (record, identity of that descendant's run in the run directory, or None)) that were
    trained from it, so that they keep pairing with it; and the records of the rows outside its chain that were
    compared with it (``others``: rows trained from scratch that pair with it, siblings), in their lineage's
    ``paired_with``, so that their paired differences do not move to the new run."""
    earlier = ledger_dir / "earlier" / old
    earlier.mkdir(parents=True, exist_ok=True)
    for f in ledger_dir.iterdir():
        if f.is_file():
            f.replace(earlier / f.name)
    for record, in_out in later:
        if not (record / f"eval-{split}.json").exists():
            continue
        lineage = read_lineage(record)
        # a record of the run now in the run directory was trained from the new run, not from this one
        if name in lineage["ancestors"] or (in_out is not None and lineage["run"] == in_out):
            continue
        lineage["ancestors"][name] = old
        _write_atomic(record / LINEAGE, _json_text(lineage))
    for record in others or ():
        if not (record / f"eval-{split}.json").exists():
            continue
        lineage = read_lineage(record)
        if name in lineage["ancestors"] or name in lineage.get("paired_with", {}):  # paired with a run already
            continue
        lineage.setdefault("paired_with", {})[name] = old
        _write_atomic(record / LINEAGE, _json_text(lineage))


def _to_ledger(run_dir: Path, ledger_dir: Path, split: str, log: Any, label: str,
               spec: Mapping[str, Any] | None = None, replace: bool = False,
               archive: Callable[[str], None] | None = None, retrained: bool = True) -> None:
    """Copy a finished run's small files into the ledger (``replace``: overwrite a stale record). When the ledger
    already has a record: of the same run (same identity), keep it and add the lineage it lacks; of another run
    (a retrain that came out different), log how far apart they are and replace it, after ``archive(old identity)``
    has moved it aside (without ``archive`` the record is kept)."""
    previous = ledger_dir / f"eval-{split}.json"
    if previous.exists() and not replace:
        old_id, new_id = read_lineage(ledger_dir)["run"], run_identity(run_dir)
        same = old_id is not None and old_id == new_id
        old = _metric_rows(json.loads(previous.read_text()))
        new = _metric_rows(json.loads((run_dir / f"eval-{split}.json").read_text()))
        diffs = {k: 100 * (new[k] - old[k]) for k in old if k in new}
        worst = max(diffs.items(), key=lambda kv: abs(kv[1]), default=("-", 0.0))
        if same or archive is None:
            if same and not (ledger_dir / LINEAGE).exists() and (run_dir / LINEAGE).exists():
                _write_atomic(ledger_dir / LINEAGE, (run_dir / LINEAGE).read_text())
            if retrained:
                log(f"[ledger] {label}: retrained; largest difference from the ledger {worst[0]} {worst[1]:+.2f} "
                    f"points ({'the same run' if same else 'another run'}: the ledger keeps its record)")
            return
        log(f"[ledger] {label}: {'retrained' if retrained else 'trained again earlier'}; largest difference from the "
            f"ledger {worst[0]} {worst[1]:+.2f} points (the new run replaces the record, which moves to "
            f"earlier/{old_id}/ for the runs trained from it or compared with it)")
        archive(old_id)
    ledger_dir.mkdir(parents=True, exist_ok=True)
    # where the run was trained (written in its run directory when it started), else this process
    trained = run_dir / "provenance.json"
    written = {"provenance.json": json.loads(trained.read_text()) if trained.exists() else machine_record()}
    if spec is not None:
        written["spec.json"] = dict(spec)
    for name, value in written.items():
        _write_atomic(ledger_dir / name, _json_text(value))
    for name in (*LEDGER_FILES, LINEAGE):
        src = run_dir / name.format(split=split)
        if src.exists():
            _write_atomic(ledger_dir / src.name, src.read_text())


def _check_parent_checkpoints(exp: Experiment, methods: list[Method], must: set[str], in_out: Mapping[str, bool],
                              out: Path, seed: int) -> None:
    """Every method about to train from a parent run finished in ``out`` needs the checkpoint of its init step there.
    A parent that finished before a method starting from that step was added kept none: say so, and how to go on,
    before anything trains (the runner does not move a finished run aside on its own)."""
    problems = []
    for method in methods:
        if method.parent is None or method.name not in must or in_out[method.name] or not in_out.get(method.parent):
            continue
        parent_dir = out / exp.method(method.parent).slug / f"seed-{seed}"
        if not (parent_dir / "checkpoints" / f"step-{method.parent_step}.pt").exists():
            problems.append(
                f"{method.name} seed {seed} starts from {method.parent}@{method.parent_step}, but the finished run "
                f"{str(parent_dir)!r} kept no checkpoint at step {method.parent_step} (it ran before a method started "
                f"there). Move that run directory away: with its ledger record, the runner then trains it again to "
                f"step {method.parent_step} and checks it against the record; or use another --out")
    if problems:
        raise ConfigError(problems, source=f"--out {str(out)!r}")


def _check_finished_runs_against_records(exp: Experiment, methods: list[Method], in_out: Mapping[str, bool],
                                         out: Path, ledger: Path | None, seed: int) -> None:
    """A finished run in ``out`` that differs from its ledger record replaces the record (a retrain that came out
    different), and re-evaluating it overwrites the record's evaluation. One trained with another CPU thread count
    than the record is no retrain of it (threads sum in another order, so the runs part within steps): say so, and
    how to go on, before anything trains or the ledger changes."""
    if ledger is None:
        return
    problems = []
    for method in methods:
        record = ledger / method.slug / f"seed-{seed}"
        run_dir = out / method.slug / f"seed-{seed}"
        if not in_out[method.name] or ledger_state(ledger, exp, method, seed) != "ok":
            continue
        if read_lineage(record)["run"] == run_identity(run_dir):
            continue
        here = thread_count(_read_json(run_dir / "provenance.json"))
        there = thread_count(_read_json(record / "provenance.json"))
        if here is not None and there is not None and here != there:
            problems.append(
                f"{method.name} seed {seed}: the finished run {str(run_dir)!r} trained with {here} CPU thread(s), its "
                f"ledger record with {there}, and the two differ; it would replace the record (and unpair the runs "
                f"trained from it). Move that run directory away (the runner then trains it again as needed and "
                f"checks it against the record), or use another --out")
    if problems:
        raise ConfigError(problems, source=f"--out {str(out)!r}")


def _check_ledger_data(ledger: Path, digest: str, log: Any) -> None:
    """Log which records of the ledger were trained on data other than ``digest`` (their ``provenance.json`` names
    another; records made before digests were kept are not counted)."""
    other: dict[str, list[str]] = {}
    for path in sorted(ledger.glob("*/seed-*/provenance.json")):
        recorded = _read_json(path).get("data")
        if recorded and recorded != digest:
            other.setdefault(recorded, []).append(f"{path.parent.parent.name}/{path.parent.name}")
    for recorded, runs in other.items():
        shown = ", ".join(runs[:4]) + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")
        log(f"[data] this data is {digest}, but {len(runs)} record(s) of the ledger trained on data {recorded} "
            f"({shown}): differences paired with them mix two builds (the report marks those seeds †)")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing or unreadable (provenance is informative only)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so that an interrupted write leaves the old file or none."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _re_evaluated_to_ledger(run_dir: Path, ledger_dir: Path, split: str, spec: Mapping[str, Any],
                            replace: bool) -> None:
    """Replace a ledger record's evaluation by a new one of the same run; its provenance keeps where the run was
    trained and adds where it was evaluated. A missing or stale record is written whole instead."""
    if replace or not (ledger_dir / f"eval-{split}.json").exists():
        _to_ledger(run_dir, ledger_dir, split, lambda _m: None, "", spec, replace=True)
        return
    provenance_path = ledger_dir / "provenance.json"
    record = json.loads(provenance_path.read_text()) if provenance_path.exists() else {}
    record["evaluated"] = machine_record()
    if not (ledger_dir / LINEAGE).exists() and (run_dir / LINEAGE).exists():
        _write_atomic(ledger_dir / LINEAGE, (run_dir / LINEAGE).read_text())
    _write_atomic(ledger_dir / f"eval-{split}.json", (run_dir / f"eval-{split}.json").read_text())
    _write_atomic(provenance_path, _json_text(record))


def run_experiment(pm: Any, exp: Experiment, out: Path, reporter_factory: Any, log: Any = print,
                   only_seeds: list[int] | None = None, only_methods: list[str] | None = None,
                   header: list[str] | Callable[[], list[str]] | None = None, ledger: Path | None = None,
                   train: bool = True, re_evaluate: bool = False, retrain: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every (method, seed) run that is not finished yet; write results.json and results.md.

    only_methods: run these methods and the methods their chains start from (default: all).
    header: Markdown lines written above the tables of results.md (the command, commit and machine), or a function
    called for them once the runs are done (so that they can describe the ledger as it is then).
    ledger: a directory that records every finished run (see the module docstring); results include its runs.
    train: False writes the results of the finished runs only (nothing trains or evaluates).
    re_evaluate: evaluate the finished runs of ``out`` again (from their best checkpoints, e.g. after an evaluation
    changed) and replace their ledger evaluations; runs recorded only in the ledger cannot be and are reported.
    retrain: train these methods again (to the end, with the methods their chains start from as they need) although
    the ledger records them, e.g. on another machine, so that a sibling trained there pairs with a run of the same
    machine; a retrain that differs from its record replaces it, and the record moves to ``earlier/`` for the runs
    trained from it or compared with it. A run of them already finished in ``out`` is not trained again."""
    from negmine.config import build_task, build_task_config
    from negmine.evaluate import evaluate_run
    from negmine.trainer import Trainer

    machine_record()  # the commit this process starts with is the one its records name
    data_checked: set[str] = set()  # data digests already checked against the ledger's records

    def archiver(method: Method, seed: int, record: Path) -> Callable[[str], None]:
        below = descendants(exp, method.name)
        later = [(ledger / d.slug / f"seed-{seed}", read_lineage(out / d.slug / f"seed-{seed}")["run"])
                 for d in below] if ledger is not None else []
        # the rows compared with it outside its chain: those naming it as baseline, every row for the first method
        chain = {d.name for d in below} | {a.name for a in with_ancestors(exp, [method.name])}
        compared = [m for m in exp.methods if m.name not in chain
                    and (m.baseline == method.name or method.name == exp.methods[0].name)]
        others = [ledger / m.slug / f"seed-{seed}" for m in compared] if ledger is not None else []
        return lambda old: _archive(record, method.name, old, later, exp.eval_split, others)

    methods = with_ancestors(exp, only_methods) if only_methods else order(exp)
    retrain = set(retrain or ())
    if retrain:
        with_ancestors(exp, sorted(retrain))  # unknown names: one error with the closest name
        if missing := sorted(retrain - {m.name for m in methods}):
            raise ConfigError([f"retrain {n!r}: not among the methods this run trains (name it with --method too)"
                               for n in missing])
    out.mkdir(parents=True, exist_ok=True)
    eval_name = f"eval-{exp.eval_split}.json"
    for seed in (only_seeds or exp.seeds) if train else ():
        in_out = {m.name: (out / m.slug / f"seed-{seed}" / eval_name).exists() for m in methods}
        states = {m.name: ledger_state(ledger, exp, m, seed) for m in methods}
        in_ledger = {name: state == "ok" and name not in retrain for name, state in states.items()}
        must = ledger_runs_needed(exp, methods, {k: in_out[k] or in_ledger[k] for k in in_out}, in_out)
        _check_parent_checkpoints(exp, methods, must, in_out, out, seed)
        _check_finished_runs_against_records(exp, methods, in_out, out, ledger, seed)
        for method in methods:
            run_dir = out / method.slug / f"seed-{seed}"
            record = None if ledger is None else ledger / method.slug / f"seed-{seed}"
            spec = run_spec(exp, method, seed)
            if states[method.name] == "stale":
                recorded = json.loads((record / "spec.json").read_text())
                log(f"[ledger] {method.name} seed {seed}: the record was made with another configuration (differs in "
                    f"{', '.join(_spec_differences(recorded, spec))}); it is replaced when this run finishes")
            if in_out[method.name] and re_evaluate:
                started = time.perf_counter()
                if not (run_dir / LINEAGE).exists():
                    _write_lineage(exp, method, seed, out, run_dir)
                evaluate_run(pm, run_dir, split=exp.eval_split, checkpoint="best")
                log(f"[re-eval] {method.name} seed {seed}: {time.perf_counter() - started:.0f}s")
                if record is not None:
                    _re_evaluated_to_ledger(run_dir, record, exp.eval_split, spec,
                                            replace=states[method.name] == "stale")
                continue
            if in_out[method.name]:
                log(f"[skip] {method.name} seed {seed}: finished")
                if not (run_dir / LINEAGE).exists():  # a run finished before lineages were recorded
                    _write_lineage(exp, method, seed, out, run_dir)
                if record is not None:
                    _to_ledger(run_dir, record, exp.eval_split, log, f"{method.name} seed {seed}", spec,
                               replace=states[method.name] == "stale", archive=archiver(method, seed, record),
                               retrained=False)
                continue
            if method.name not in must:
                note = " (not re-evaluated: its run directory is not in --out)" if re_evaluate else ""
                log(f"[skip] {method.name} seed {seed}: finished (ledger){note}")
                continue
            if not (run_dir / "summary.json").exists():
                def train(stop_at: int | None = None, method: Method = method, run_dir: Path = run_dir,
                          seed: int = seed) -> dict[str, Any]:
                    stages = [dict(s) for s in method.stages]
                    if method.parent is not None:
                        parent_dir = out / exp.method(method.parent).slug / f"seed-{seed}"
                        stages[0]["init"] = str(parent_dir / "checkpoints" / f"step-{method.parent_step}.pt")
                    raw = merge(exp.settings, method.settings,
                                {"task": exp.task, "profile": exp.profile, "seed": seed, "stages": stages,
                                 "run_dir": str(run_dir), "keep_steps": keep_steps(exp, method)})
                    if method.parent is not None and exp.lr_schedule == "continue":
                        raw["lr_schedule_start"] = chain_steps(exp, method) - method.steps
                    keep = raw.pop("keep_steps")
                    task = build_task(pm, raw)
                    config = build_task_config(pm, task, raw, source=f"experiment method {method.name!r}")
                    resume = (run_dir / "checkpoints" / "last.pt").exists()
                    digest = task.data_digest() if task.data_digest is not None else None
                    started = run_dir / "provenance.json"
                    if not resume or not started.exists():
                        run_dir.mkdir(parents=True, exist_ok=True)
                        _write_atomic(started, _json_text({**machine_record(), **({"data": digest} if digest else {})}))
                    elif digest and (began := _read_json(started).get("data")) not in (None, digest):
                        log(f"[data] {method.name} seed {seed}: resumes on data {digest}, but it started on data "
                            f"{began}: its record will mix two builds")
                    if digest and ledger is not None and digest not in data_checked:  # once per experiment run
                        data_checked.add(digest)
                        _check_ledger_data(ledger, digest, log)
                    until = f" to step {stop_at} (its children start there)" if stop_at is not None else ""
                    log(f"[{'resume' if resume else 'train'}] {method.name} seed {seed}{until} -> {run_dir}")
                    trainer = Trainer(task, config, plugins=pm, resume=resume, reporter=reporter_factory())
                    trainer.keep_steps = set(keep)
                    trainer.stop_at = stop_at
                    watch = SlowStartWatch(f"{method.name} seed {seed}",
                                           _other_seed_curves(method, seed, out, ledger), log)
                    pm.register(watch, name=f"slow-start-watch:{method.slug}:{seed}")
                    try:
                        return trainer.fit()
                    finally:
                        pm.unregister(watch)

                label = f"{method.name} seed {seed}"
                target = (prefix_target(exp, method, must) if states[method.name] == "ok" and method.name not in retrain
                          else None)
                recorded = (json.loads((record / "summary.json").read_text())
                            if target is not None and record is not None and (record / "summary.json").exists()
                            else {})
                # only where the record logged a validation evaluation in (0, target] to check the retrained run by
                if any(0 < e.get("step", 0) <= target for e in recorded.get("evaluations") or []):
                    if prefix_ready(run_dir, record, exp, method, target):
                        log(f"[skip] {label}: trained to step {target} already, the ledger's run")
                        continue
                    partial = train(stop_at=target)
                    if "stopped_at" in partial:
                        same, why = same_prefix(recorded, partial, target)
                        if same:
                            _write_prefix(run_dir, record, target)
                            log(f"[prefix] {label}: the same run as the ledger's record up to step {target} "
                                f"({why}); not trained further, its children start from it")
                            continue
                        log(f"[prefix] {label}: differs from the ledger's record ({why}); training it to the end")
                        train()
                else:
                    train()
            started = time.perf_counter()
            evaluate_run(pm, run_dir, split=exp.eval_split, checkpoint="best")
            log(f"[eval] {method.name} seed {seed}: {time.perf_counter() - started:.0f}s")
            _write_lineage(exp, method, seed, out, run_dir)
            if record is not None:
                _to_ledger(run_dir, record, exp.eval_split, log, f"{method.name} seed {seed}", spec,
                           replace=states[method.name] == "stale", archive=archiver(method, seed, record))
    if only_seeds:
        exp = attrs.evolve(exp, seeds=tuple(dict.fromkeys((*exp.seeds, *only_seeds))))
    results = collect(exp, out, ledger)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = header() if callable(header) else (header or [])
    (out / "results.md").write_text("\n".join([*lines, render_results(exp, results)]) + "\n")
    plot_results(results, out / "results.png")
    return results


def _metric_rows(result: Mapping[str, Any]) -> dict[str, float]:
    r = result["retrieval"]
    rows = {"R@1": r["mean@1"], "R@5": r["mean@5"], "R@10": r["mean@10"]}
    attributes = result.get("attributes")
    if isinstance(attributes, Mapping) and attributes.get("mean") is not None:
        for g, v in attributes["per_group"].items():
            if v is not None:
                rows[f"attr:{g}"] = v
        for word, w in (attributes.get("per_word") or {}).items():
            if isinstance(w, Mapping) and w.get("auc") is not None:  # for paired tables per word, as context's
                rows[f"attr:word:{w.get('attribute', '?')}:{word}"] = w["auc"]
        rows["attr:mean"] = attributes["mean"]
        if attributes.get("mean_normalised") is not None:
            rows["attr:mean-norm"] = attributes["mean_normalised"]
        if attributes.get("mean_matched") is not None:
            rows["attr:mean-matched"] = attributes["mean_matched"]
        context = attributes.get("context")
        if isinstance(context, Mapping) and context.get("mean") is not None:
            rows["attr:context"] = context["mean"]
            for g, v in (context.get("per_group") or {}).items():
                if v is not None:  # kept in results.json for paired tables; results.md's tables show the mean
                    rows[f"attr:context:{g}"] = v
            if context.get("mean_normalised") is not None:
                rows["attr:context-norm"] = context["mean_normalised"]
    rendered = result.get("rendered")
    if isinstance(rendered, Mapping) and rendered.get("accuracy") is not None:
        rows["rendered"] = rendered["accuracy"]
    grounding = result.get("grounding")
    every = grounding.get("per_attribute", {}).get("all", {}) if isinstance(grounding, Mapping) else {}
    if every.get("n"):
        rows["word-frames"] = every["word"]  # the word's own frames alone prefer the scene to its edit
        rows["word-share"] = every["share"]  # share of the evidence on the word's frames
    return rows


def collect(exp: Experiment, out: Path, ledger: Path | None = None) -> dict[str, Any]:
    """Mean and std over seeds of every metric of every method (finished runs only): a run's own evaluation in
    ``out``, else the ledger's record of it (when not stale)."""
    methods = {}
    for method in exp.methods:
        per_seed, lineages, earlier, validation, data, threads = {}, {}, {}, {}, {}, {}
        for seed in exp.seeds:
            run = Path(method.slug) / f"seed-{seed}" / f"eval-{exp.eval_split}.json"
            roots = [out] + ([ledger] if ledger_state(ledger, exp, method, seed) == "ok" else [])
            path = next((root / run for root in roots if (root / run).exists()), None)
            if path is not None:
                per_seed[seed] = _metric_rows(json.loads(path.read_text()))
                lineages[seed] = read_lineage(path.parent)
                provenance = _read_json(path.parent / "provenance.json")
                if provenance.get("data"):
                    data[seed] = provenance["data"]
                if (count := thread_count(provenance)) is not None:
                    threads[seed] = count
                curve = _validation_curve(path.parent / "summary.json")
                if curve:
                    validation[seed] = curve
            if ledger is not None:  # earlier runs of this seed, kept for the records trained from them
                found = sorted((ledger / method.slug / f"seed-{seed}" / "earlier").glob(f"*/eval-{exp.eval_split}.json"))
                if found:
                    earlier[seed] = {f.parent.name: _metric_rows(json.loads(f.read_text())) for f in found}
        keys = list(dict.fromkeys(k for v in per_seed.values() for k in v))
        stats = {}
        for k in keys:
            vals = [v[k] for v in per_seed.values() if k in v]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            stats[k] = {"mean": mean, "std": std, "n": len(vals)}
        methods[method.name] = {"chain_steps": chain_steps(exp, method), "seeds": per_seed, "stats": stats,
                                "lineage": lineages, "earlier": earlier, "validation": validation, "data": data,
                                "threads": threads}
    return {"task": exp.task, "profile": exp.profile, "split": exp.eval_split, "methods": methods}


def thread_count(provenance: Mapping[str, Any]) -> int | None:
    """The CPU threads a run trained with, from its ``provenance.json`` (``machine``: "..., 2 cores, 1 threads, ..."
    as :func:`machine_record` writes it), or None when it does not say (a GPU run, an older record)."""
    found = re.search(r"(\d+) threads", str(provenance.get("machine", "")))
    return int(found.group(1)) if found else None


def _validation_curve(summary_path: Path) -> dict[int, float]:
    """Validation R@10 (mean of both directions) at each step a run logged, from its ``summary.json`` ({} without
    one). Keys are steps within the run (0: before training)."""
    if not summary_path.exists():
        return {}
    summary = json.loads(summary_path.read_text())
    points = [summary.get("initial"), *(summary.get("evaluations") or [])]
    return {int(e["step"]): float(e["mean@10"]) for e in points
            if isinstance(e, Mapping) and "step" in e and "mean@10" in e}


def run_validation_curve(run_dir: Path) -> dict[int, float]:
    """Validation R@10 (in [0, 1]) at each step a run directory logged: from ``summary.json`` once the run is done,
    else from the evaluations in its ``metrics.jsonl`` (a run still training, or one stopped early; a step logged
    twice, as after a resume, keeps its last value). {} when the directory has neither."""
    curve = _validation_curve(run_dir / "summary.json")
    if curve or not (run_dir / "metrics.jsonl").exists():
        return curve
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: the lines before it stand
        if (isinstance(record, dict) and record.get("event") == "eval" and record.get("split", "val") == "val"
                and "step" in record and "mean@10" in record):
            curve[int(record["step"])] = float(record["mean@10"])
    return curve


# a seed whose parent, at a branch point, is this many points of validation R@10 below the median of the seeds is
# flagged: its children start from a much weaker model, and their paired differences mean something else there
SLOW_START_POINTS = 20.0


def branch_points(exp: Experiment, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where the children start: for each (parent, step) of the init chains, the parent's validation R@10 at that step
    per seed (in [0, 1], from its ``summary.json``), the children starting there, and the seeds flagged as slow
    starts (at least :data:`SLOW_START_POINTS` points below the median of the seeds: with two seeds, the lower one
    when they are twice that apart)."""
    points: dict[tuple[str, int], list[str]] = {}
    for m in exp.methods:
        if m.parent is not None and m.parent_step is not None:
            points.setdefault((m.parent, m.parent_step), []).append(m.name)
    out = []
    for (parent, step), children in points.items():
        curves = (results["methods"].get(parent) or {}).get("validation") or {}
        # keys are ints from collect(), strings when read back from results.json
        at = {int(seed): v for seed, curve in curves.items()
              for k, v in curve.items() if int(k) == step}
        if not at:
            continue
        median, slow = _slow_seeds(at)
        out.append({"parent": parent, "step": step, "children": children, "r10": dict(sorted(at.items())),
                    "median": median, "slow": slow})
    return out


def _slow_seeds(at: Mapping[int, float]) -> tuple[float, list[int]]:
    """(the median of the seeds' values, the seeds at least :data:`SLOW_START_POINTS` points below it)."""
    median = _median(at.values())
    return median, sorted(s for s, v in at.items() if 100 * (median - v) >= SLOW_START_POINTS)


def _median(values: Any) -> float:
    """The median of a non-empty iterable of numbers (the mean of the two middle values when their count is even)."""
    values = sorted(values)
    return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2


def slow_starts(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per method with two or more seeds: validation R@10 (in [0, 1]) per seed at the first step after step 0 that
    every seed evaluated, and the seeds flagged there as slow starts (the rule of :func:`branch_points`). A slow
    seed's paired differences mostly measure its slow start, whichever row it is in: a reader should see it
    beside the mean. Methods whose seeds share no evaluated step are left out."""
    out = []
    for name, m in results["methods"].items():
        curves = {int(seed): {int(k): v for k, v in curve.items()} for seed, curve in (m.get("validation") or {}).items()}
        if len(curves) < 2:
            continue
        shared = set.intersection(*(set(c) for c in curves.values())) - {0}
        if not shared:
            continue
        step = min(shared)
        at = {seed: curve[step] for seed, curve in sorted(curves.items())}
        median, slow = _slow_seeds(at)
        out.append({"method": name, "step": step, "r10": at, "median": median, "slow": slow})
    return out


class SlowStartWatch:
    """Warns while a run trains when a validation evaluation is :data:`SLOW_START_POINTS` or more points of R@10
    below the median of the same method's other seeds at the same step (their finished runs in ``--out`` or the
    ledger). :func:`slow_starts` lists such seeds in the report once the runs are done; this says it at the step,
    while there is still time to decide what to do with the run. Registered on the plugin manager for one run."""

    def __init__(self, label: str, others: Mapping[Any, Mapping[int, float]], log: Any, *, noun: str = "seed",
                 consequence: str = "its paired differences will mostly measure this start (the report lists it "
                                    "under slow starts)") -> None:
        self.label = label
        self.others = others  # seed (or any name) -> {step: validation R@10 in [0, 1]}
        self.log = log
        self.noun = noun  # what the keys of ``others`` are, in the warning: "seed", "run"
        self.consequence = consequence

    @hookimpl
    def negmine_evaluate(self, trainer: Any, split: str, metrics: dict) -> None:
        if split != "val" or "mean@10" not in metrics:
            return
        step = int(metrics["step"])
        at = {seed: curve[step] for seed, curve in self.others.items() if step in curve}
        if step == 0 or not at:
            return
        median = _median(at.values())
        gap = 100 * (median - float(metrics["mean@10"]))
        if gap >= SLOW_START_POINTS:
            order = sorted(at) if all(isinstance(k, int) for k in at) else sorted(at, key=str)
            names = ", ".join(str(name) for name in order)
            self.log(f"[slow start] {self.label}: validation R@10 {100 * metrics['mean@10']:.1f} at step {step}, "
                     f"{gap:.1f} points below {f'the median of {self.noun}s' if len(at) > 1 else self.noun} {names} "
                     f"at that step ({100 * median:.1f}); {self.consequence}")


def _other_seed_curves(method: Method, seed: int, out: Path, ledger: Path | None) -> dict[int, dict[int, float]]:
    """Validation R@10 curves of ``method``'s other finished seeds: the run directories of ``out`` first, then the
    ledger's records."""
    curves: dict[int, dict[int, float]] = {}
    for root in (out, ledger):
        if root is None or not (root / method.slug).is_dir():
            continue
        for run in sorted((root / method.slug).glob("seed-*")):
            other = run.name.removeprefix("seed-")
            if other.isdigit() and int(other) != seed and int(other) not in curves:
                curve = _validation_curve(run / "summary.json")
                if curve:
                    curves[int(other)] = curve
    return curves


def machine_record() -> dict[str, str]:
    """The git commit of the working directory and the machine, as short strings.

    Read once per process (:func:`run_experiment` reads it first): a long experiment records the code it started
    with, not commits made while it ran; tracked files changed since the commit are flagged."""
    return dict(_machine_record_once())


@functools.cache
def _machine_record_once() -> dict[str, str]:
    import os
    import platform
    import subprocess

    import torch

    try:
        commit = subprocess.check_output(["git", "log", "-1", "--format=%h (%cd)", "--date=iso"], text=True,
                                         stderr=subprocess.DEVNULL).strip()
        # code and configuration only: results written while experiments run are not the code that made them
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "*.py", "*.toml"],
                               stderr=subprocess.DEVNULL).returncode != 0
        commit += " + uncommitted code changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    # the CPU's vector ISA picks torch's kernels: runs are bitwise repeatable on one ISA, not across ISAs
    isa = torch.backends.cpu.get_cpu_capability()
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU only ({isa}), {os.cpu_count()} cores, {torch.get_num_threads()} threads")
    return {"commit": commit,
            "machine": f"{platform.machine()}, {device}, torch {torch.__version__}, Python {platform.python_version()}"}


def provenance(command: str, ledger: Path | None = None) -> list[str]:
    """Markdown lines naming the command, the git commit of the working directory and the machine, and, with a
    ledger, the commits, machines and data digests its runs were recorded with."""
    here = machine_record()
    lines = [f"- command: `{command}`", f"- commit: {here['commit']}", f"- machine: {here['machine']}"]
    if ledger is not None and ledger.is_dir():
        seen: dict[tuple[str, str, str, str], int] = {}
        for path in sorted(ledger.glob("*/seed-*/provenance.json")):
            record = json.loads(path.read_text())
            for what, entry in (("recorded", record), ("re-evaluated", record.get("evaluated"))):
                if entry:
                    data = f", data {record['data']}" if what == "recorded" and record.get("data") else ""
                    key = (what, entry.get("commit", "?"), entry.get("machine", "?"), data)
                    seen[key] = seen.get(key, 0) + 1
        for (what, commit, machine, data), n in seen.items():
            lines.append(f"- {n} run(s) of the ledger {what} at commit {commit} on {machine}{data}")
    return [*lines, ""]


def _table(results: Mapping[str, Any], keys: list[str]) -> list[str]:
    lines = ["| method | steps | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 3)]
    for name, m in results["methods"].items():
        n = max((s["n"] for s in m["stats"].values()), default=0)
        cells = [_mean_std(m["stats"][k]) if k in m["stats"] else "-" for k in keys]
        lines.append(f"| {name} | {m['chain_steps']} | {n} | " + " | ".join(cells) + " |")
    return lines


def _mean_std(stat: Mapping[str, Any], scale: float = 100.0, sign: str = "") -> str:
    """``mean ± std`` in %, or the mean alone for a single seed (no spread to show)."""
    mean = f"{scale * stat['mean']:{sign}.1f}"
    return mean if stat.get("n", 2) < 2 else f"{mean} ± {scale * stat['std']:.1f}"


def paired_difference(results: Mapping[str, Any], method: str, baseline: str, key: str) -> dict[str, Any] | None:
    """``method``'s metric minus ``baseline``'s on the seeds both have (``{"per_seed": {seed: diff}, "mean": float,
    "std": float, "unpaired": [seed, ...], "mixed_data": [seed, ...], "mixed_threads": [seed, ...],
    "mixed_lineage": [seed, ...]}``), or None when they share no seed with the metric. ``mixed_data``: the paired
    seeds whose two runs recorded different data digests (see :attr:`negmine.Task.data_digest`); ``mixed_threads``:
    those whose two runs trained with different CPU thread counts (:func:`thread_count`; on a CPU a run does not
    reproduce across thread counts, so the pair then differs by more than the method). Seeds that do not record it
    on either side are not counted.

    When ``baseline`` is in the chain ``method``'s run started from, the difference is taken against that very run
    of it (its lineage): the current record, or the earlier one it was trained from (a retrained baseline that came
    out different replaces the record); a seed whose baseline run was not recorded is left out, in ``unpaired``.
    When it is not (a row trained from scratch, or a sibling: ``HN+...`` rows and Hard Neg both start from DaveNet),
    the difference is taken against the baseline's run it was compared with when the baseline's record was replaced
    (the lineage's ``paired_with``, stamped by the replacement), else against its current record;
    ``mixed_lineage``: the seeds whose two runs started from different runs of a method both chains start from (e.g.
    a DaveNet retrained on another machine for one of them)."""
    ours_m, base_m = results["methods"][method], results["methods"][baseline]
    ours, base = ours_m["seeds"], base_m["seeds"]
    diffs, unpaired, mixed, mixed_threads, mixed_lineage = {}, [], [], [], []
    for seed, v in ours.items():
        b = base.get(seed)
        b_data = base_m.get("data", {}).get(seed)
        b_threads = base_m.get("threads", {}).get(seed)
        ancestors = ours_m.get("lineage", {}).get(seed, {}).get("ancestors", {})
        # the baseline's run this one started from, else the one it was compared with when that record was replaced
        wanted = (ancestors.get(baseline)
                  or ours_m.get("lineage", {}).get(seed, {}).get("paired_with", {}).get(baseline))
        if wanted is None:  # a sibling: the runs both chains start from must be the same runs
            theirs = base_m.get("lineage", {}).get(seed, {}).get("ancestors", {})
            if b is not None and any(theirs[name] != run for name, run in ancestors.items() if name in theirs):
                mixed_lineage.append(seed)
        elif base_m.get("lineage", {}).get(seed, {}).get("run") != wanted:
            b, b_data, b_threads = base_m.get("earlier", {}).get(seed, {}).get(wanted), None, None
            if b is None:
                unpaired.append(seed)
        if b is not None and key in v and key in b:
            diffs[seed] = v[key] - b[key]
            a_data = ours_m.get("data", {}).get(seed)
            if a_data and b_data and a_data != b_data:
                mixed.append(seed)
            a_threads = ours_m.get("threads", {}).get(seed)
            if a_threads is not None and b_threads is not None and a_threads != b_threads:
                mixed_threads.append(seed)
    if not diffs:
        return None
    vals = list(diffs.values())
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"per_seed": diffs, "mean": mean, "std": std, "unpaired": unpaired, "mixed_data": mixed,
            "mixed_threads": mixed_threads, "mixed_lineage": [seed for seed in mixed_lineage if seed in diffs]}


def paired_differences(results: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """Per method (the first method excluded): :func:`paired_difference` against the first method; methods sharing
    no seed with it are left out."""
    names = list(results["methods"])
    pairs = ((name, paired_difference(results, name, names[0], key)) for name in names[1:])
    return {name: d for name, d in pairs if d is not None}


# after a seed's paired difference whose two runs trained on different data builds (different digests)
MIXED_MARK = "†"
MIXED_NOTE = (f"{MIXED_MARK}: the two runs of this seed trained on different builds of the data (their provenance "
              "names different data digests); the difference mixes the build's effect with the method's.")


# after a seed's paired difference whose two runs trained with different CPU thread counts
THREADS_MARK = "‡"
THREADS_NOTE = (f"{THREADS_MARK}: the two runs of this seed trained with different CPU thread counts (their "
                "provenance); on a CPU a run does not reproduce across thread counts, so the difference mixes that "
                "chance with the method's.")


# after a seed's paired difference whose two runs (siblings) started from different runs of a shared ancestor
LINEAGE_MARK = "§"
LINEAGE_NOTE = (f"{LINEAGE_MARK}: the two runs of this seed started from different runs of a method both chains start "
                "from (e.g. DaveNet trained again on another machine for one of them); the difference mixes those "
                "runs' difference with the method's.")


def seed_marks(d: Mapping[str, Any], seed: Any) -> str:
    """The marks after ``seed``'s difference in a :func:`paired_difference`: :data:`MIXED_MARK` (two data builds),
    :data:`THREADS_MARK` (two thread counts), :data:`LINEAGE_MARK` (siblings from different runs of an ancestor)."""
    return ((MIXED_MARK if seed in (d.get("mixed_data") or ()) else "")
            + (THREADS_MARK if seed in (d.get("mixed_threads") or ()) else "")
            + (LINEAGE_MARK if seed in (d.get("mixed_lineage") or ()) else ""))


def mark_notes(diffs: Any) -> list[str]:
    """The notes of the marks that the :func:`paired_difference` results ``diffs`` (None entries skipped) carry."""
    diffs = [d for d in diffs if d]
    return ([MIXED_NOTE] if any(d.get("mixed_data") for d in diffs) else []) + (
        [THREADS_NOTE] if any(d.get("mixed_threads") for d in diffs) else []) + (
        [LINEAGE_NOTE] if any(d.get("mixed_lineage") for d in diffs) else [])


def _difference_text(d: Mapping[str, Any]) -> tuple[str, str]:
    """(``mean ± std`` in points, the per-seed differences) of a :func:`paired_difference`."""
    per = ", ".join(f"{seed}: {100 * v:+.1f}{seed_marks(d, seed)}" for seed, v in sorted(d["per_seed"].items()))
    return _mean_std({**d, "n": len(d["per_seed"])}, sign="+"), per


# per attribute in context and per word: kept in results.json for paired tables; results.md's tables show the means
_DETAIL_KEYS = ("attr:context:", "attr:word:")


def render_results(exp: Experiment, results: Mapping[str, Any]) -> str:
    """Markdown: the retrieval table, the attribute table (when the task reports one), paired differences against
    the first method (same seeds), and one table of each method with a ``baseline`` against it, all in %."""
    keys: list[str] = []
    for m in results["methods"].values():
        keys += [k for k in m["stats"] if k not in keys]
    retrieval = [k for k in keys if k.startswith("R@")]
    others = [k for k in keys if k not in retrieval and not k.startswith(_DETAIL_KEYS)]
    lines = [f"Task `{exp.task}` (profile `{exp.profile}`), split `{exp.eval_split}`; mean ± std over seeds, in %.", ""]
    if others and retrieval:
        lines += ["Retrieval (recall@k, mean of both directions):", "", *_table(results, retrieval), "",
                  "Attributes (AUC per group and mean) and other metrics:", "", *_table(results, others)]
    else:
        lines += _table(results, [k for k in keys if not k.startswith(_DETAIL_KEYS)])
    names = list(results["methods"])
    compared = [k for k in ("R@1", "R@5", "R@10", "attr:mean", "attr:mean-norm", "attr:mean-matched", "attr:context",
                            "attr:context-norm", "rendered", "word-frames")
                if k in keys]
    shown = []  # every paired difference shown: the tables then carry the notes of their marks
    for key in compared:
        diffs = paired_differences(results, key)
        if not diffs:
            continue
        shown += diffs.values()
        lines += ["", f"Paired differences in {key} against {names[0]} (same seed), in points:", "",
                  "| method | mean ± std | per seed |", "|---|---|---|"]
        for name, d in diffs.items():
            lines.append(f"| {name} | {' | '.join(_difference_text(d))} |")
    rows = []
    for m in exp.methods:
        if m.baseline is None or m.name not in results["methods"] or m.baseline not in results["methods"]:
            continue
        cells = [paired_difference(results, m.name, m.baseline, key) for key in compared]
        shown += cells
        if any(cells):
            rows.append(f"| {m.name} | {m.baseline} | " + " | ".join("{} ({})".format(*_difference_text(d)) if d else "-" for d in cells)
                        + " |")
    if rows:
        lines += ["", "Paired differences against each method's `baseline` (same seeds), in points: mean ± std "
                  "(per seed):", "", "| method | baseline | " + " | ".join(compared) + " |",
                  "|" + "---|" * (len(compared) + 2), *rows]
    for note in mark_notes(shown):
        lines += ["", note]
    slow = [s for s in slow_starts(results) if s["slow"]]
    if slow:
        lines += ["", f"Slow starts: seeds whose validation R@10 at their first evaluation is {SLOW_START_POINTS:.0f}+ "
                  "points below the median of the method's seeds (in %; their paired differences mostly measure the "
                  "slow start):", "", "| method | step | median | slow seeds |", "|---|---|---|---|"]
        for s in slow:
            seeds = ", ".join(f"{seed}: {100 * s['r10'][seed]:.1f}" for seed in s["slow"])
            lines.append(f"| {s['method']} | {s['step']} | {100 * s['median']:.1f} | {seeds} |")
    points = branch_points(exp, results)
    if points:
        seeds = sorted({s for p in points for s in p["r10"]})
        lines += ["", "Branch points: the parent's validation R@10 (%) where its children start, per seed; **bold**: "
                  f"a slow start ({SLOW_START_POINTS:.0f}+ points below the seeds' median), whose children start from a "
                  "much weaker model:", "", "| parent | children | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|" + "---|" * (len(seeds) + 2)]
        for p in points:
            cells = [("-" if s not in p["r10"] else
                      f"**{100 * p['r10'][s]:.1f}**" if s in p["slow"] else f"{100 * p['r10'][s]:.1f}") for s in seeds]
            lines.append(f"| {p['parent']}@{p['step']} | {', '.join(p['children'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_results(results: Mapping[str, Any], path: Path,
                 keys: tuple[str, ...] = ("R@10", "attr:mean", "attr:mean-norm", "attr:context-norm")) -> Path | None:
    """A bar chart per metric (mean over seeds, one dot per seed) of every method; None when no method has the keys."""
    keys = tuple(k for k in keys if any(k in m["stats"] for m in results["methods"].values()))
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for x, name in enumerate(names):
            m = results["methods"][name]
            if key not in m["stats"]:
                continue
            ax.bar(x, 100 * m["stats"][key]["mean"], color="#9ab", width=0.7)
            seeds = [100 * v[key] for v in m["seeds"].values() if key in v]
            ax.scatter([x] * len(seeds), seeds, color="#234", s=12, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
