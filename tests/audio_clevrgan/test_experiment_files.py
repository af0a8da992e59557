"""The committed experiment files load, give every row the same budget, and every stage is a valid config; their
committed ledgers hold only records of the files' methods as they are now defined."""

from __future__ import annotations

from pathlib import Path

import pytest

from negmine.config import build_config, merge
from negmine.experiment import chain_steps, ledger_state, load_experiment

EXAMPLE = Path(__file__).parents[2] / "examples" / "audio_clevrgan"
FILES = sorted((EXAMPLE / "experiments").glob("*.toml"))
# a file's ledger is results/<file stem>-runs (the commands in the files and results pages write there)
LEDGERS = [(p, d) for p in FILES if (d := EXAMPLE / "results" / f"{p.stem}-runs").is_dir()]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_is_valid(path, plugin_manager):
    exp = load_experiment(path)
    assert {chain_steps(exp, m) for m in exp.methods} == {exp.total_steps}
    for method in exp.methods:
        raw = merge(exp.settings, {"task": exp.task, "profile": exp.profile, "stages": [dict(s) for s in method.stages]})
        # the runner points init at the parent's checkpoint (any existing path passes the config check)
        raw["stages"][0]["init"] = str(path) if raw["stages"][0].get("init_optimizer") else "previous"
        cfg = build_config(raw, plugin_manager.generators(), source=str(path))
        for stage in cfg.stages:
            assert len(stage.reduction) == len(stage.combine)


def test_paper_experiment_has_the_six_methods():
    exp = load_experiment(next(p for p in FILES if p.stem == "paper-cpu"))
    assert [m.name for m in exp.methods][:6] == ["DaveNet", "Random Edits", "Targeted Edits", "Hard Neg", "HN+Random",
                                                 "HN+Targeted"]
    parents = {m.name: m.parent for m in exp.methods}
    assert parents["Targeted Edits"] == "Random Edits" and parents["HN+Targeted"] == "HN+Random"
    assert len(exp.seeds) >= 3


@pytest.mark.parametrize(("path", "ledger"), LEDGERS, ids=[p.stem for p, _ in LEDGERS])
def test_committed_ledger_records_match_their_methods_as_defined_now(path, ledger):
    """An edit of an experiment file that changes a trained method's configuration (moving a method to the file it
    extends, say) would make the runner treat its records as stale and train them again: every record here must be
    of a method the file defines, under its current spec."""
    exp = load_experiment(path)
    slugs = {m.slug: m for m in exp.methods}
    records = sorted(d for d in ledger.glob("*/seed-*") if d.is_dir())
    assert records
    assert sorted({d.parent.name for d in records} - set(slugs)) == []
    stale = [(d.parent.name, d.name) for d in records
             if ledger_state(ledger, exp, slugs[d.parent.name], int(d.name.removeprefix("seed-"))) == "stale"]
    assert stale == []
