"""The committed experiment files load, give every row the same budget, and every stage is a valid config."""

from __future__ import annotations

from pathlib import Path

import pytest

from negmine.config import build_config, merge
from negmine.experiment import chain_steps, load_experiment

FILES = sorted((Path(__file__).parents[2] / "examples" / "audio_clevrgan" / "experiments").glob("*.toml"))


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
