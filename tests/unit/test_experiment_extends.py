"""Experiment files that extend another (``extends``), and the committed ledgers' records against their files."""

from pathlib import Path

import pytest

from negmine.errors import ConfigError
from negmine.experiment import ledger_state, load_experiment, run_spec

BASE = """
task = "toy"
profile = "small"
seeds = [0, 1]
total_steps = 30

[settings]
eval_every = 10
task_options = { n = 64, dim = 8 }

[[methods]]
name = "Random"
negatives = ["random"]
steps = 30

[[methods]]
name = "Hard Neg"
init = "Random@10"
negatives = ["random", "hard-minibatch"]
steps = 20
[methods.generators.hard-minibatch]
strategy = "semihard"
margin = 0.3
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_extends_merges_settings_per_option_and_methods_by_name(tmp_path):
    write(tmp_path, "base.toml", BASE)
    child = write(tmp_path, "child.toml", """
extends = "base.toml"
seeds = [3]

[settings]
task_options = { dim = 16 }

[[methods]]
name = "Hard Neg"
baseline = "Random"
[methods.generators.hard-minibatch]
margin = 0.5

[[methods]]
name = "Hard Neg 2"
init = "Random@20"
negatives = ["random", "hard-minibatch"]
steps = 10
""")
    exp = load_experiment(child)
    assert exp.seeds == (3,) and exp.task == "toy" and exp.total_steps == 30
    assert exp.settings == {"eval_every": 10, "task_options": {"n": 64, "dim": 16}}
    assert [m.name for m in exp.methods] == ["Random", "Hard Neg", "Hard Neg 2"]
    hard = exp.method("Hard Neg")
    assert hard.baseline == "Random" and hard.parent == "Random" and hard.parent_step == 10
    # the generator's options merge per option: strategy kept from the base, margin from the child
    assert hard.stages[0]["generators"] == {"hard-minibatch": {"strategy": "semihard", "margin": 0.5}}
    assert hard.stages[0]["negatives"] == ["random", "hard-minibatch"]


def test_extends_unchanged_gives_the_same_run_specs(tmp_path):
    base = write(tmp_path, "base.toml", BASE)
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub", "child.toml", 'extends = "../base.toml"\n')  # relative to the extending file
    a, b = load_experiment(base), load_experiment(child)
    assert [run_spec(a, m, 0) for m in a.methods] == [run_spec(b, m, 0) for m in b.methods]


def test_stages_replace_single_stage_keys(tmp_path):
    write(tmp_path, "base.toml", BASE)
    child = write(tmp_path, "child.toml", """
extends = "base.toml"
[[methods]]
name = "Hard Neg"
stages = [{ name = "a", steps = 5, negatives = ["random"] }, { name = "b", steps = 15, negatives = ["hard-minibatch"] }]
""")
    hard = load_experiment(child).method("Hard Neg")
    assert [s["name"] for s in hard.stages] == ["a", "b"] and hard.steps == 20
    assert "generators" not in hard.stages[1]


def test_extends_problems_are_reported(tmp_path):
    write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    write(tmp_path, "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"cycle \(a.toml -> b.toml -> a.toml\)"):
        load_experiment(tmp_path / "a.toml")
    with pytest.raises(ConfigError, match="'missing.toml' does not exist"):
        load_experiment(write(tmp_path, "c.toml", 'extends = "missing.toml"\n'))
    write(tmp_path, "base.toml", BASE)
    # a problem that comes from the merge is reported like the file's own, with the others, at once
    bad = write(tmp_path, "d.toml", 'extends = "base.toml"\nseeds = "0"\n[[methods]]\nname = "Random"\nstepz = 3\n')
    with pytest.raises(ConfigError) as err:
        load_experiment(bad)
    assert "unknown key 'stepz' (did you mean 'steps'?)" in str(err.value)
    assert "seeds: expected a non-empty list of integers" in str(err.value)



def test_keep_methods_keeps_only_the_named_base_methods(tmp_path):
    write(tmp_path, "base.toml", BASE)
    # a budget of its own: none of the base's rows (their chains train 30 steps), two new ones of 40
    child = write(tmp_path, "child.toml", """
extends = "base.toml"
keep_methods = []
total_steps = 40

[[methods]]
name = "Random (40 steps)"
negatives = ["random"]
steps = 40

[[methods]]
name = "Hard Neg (40 steps)"
init = "Random (40 steps)@20"
baseline = "Random (40 steps)"
negatives = ["random", "hard-minibatch"]
steps = 20
""")
    exp = load_experiment(child)
    assert [m.name for m in exp.methods] == ["Random (40 steps)", "Hard Neg (40 steps)"]
    assert exp.settings == {"eval_every": 10, "task_options": {"n": 64, "dim": 8}}  # settings still inherited
    kept = write(tmp_path, "kept.toml", 'extends = "base.toml"\nkeep_methods = ["Random"]\n')
    assert [m.name for m in load_experiment(kept).methods] == ["Random"]
    # without its parent a kept child is reported like any init naming an unknown method
    orphan = write(tmp_path, "orphan.toml", 'extends = "base.toml"\nkeep_methods = ["Hard Neg"]\n')
    with pytest.raises(ConfigError, match="init names unknown method 'Random'"):
        load_experiment(orphan)


def test_keep_methods_problems_are_reported_at_once(tmp_path):
    write(tmp_path, "base.toml", BASE)
    bad = write(tmp_path, "bad.toml", 'extends = "base.toml"\nkeep_methods = ["Randm", "Hard Ng"]\n')
    with pytest.raises(ConfigError) as err:
        load_experiment(bad)
    assert "'Randm' is not a method of 'base.toml' (did you mean 'Random'?)" in str(err.value)
    assert "'Hard Ng' is not a method of 'base.toml' (did you mean 'Hard Neg'?)" in str(err.value)
    with pytest.raises(ConfigError, match="expected a list of method names"):
        load_experiment(write(tmp_path, "one.toml", 'extends = "base.toml"\nkeep_methods = "Random"\n'))
    with pytest.raises(ConfigError, match="this file extends none"):
        load_experiment(write(tmp_path, "none.toml", 'keep_methods = ["Random"]\n' + BASE))

REPO = Path(__file__).resolve().parents[2]
LEDGERS = sorted(p for p in (REPO / "examples" / "audio_clevrgan" / "results").glob("*-runs")
                 if (REPO / "examples" / "audio_clevrgan" / "experiments" / f"{p.name[:-5]}.toml").exists())


@pytest.mark.parametrize("ledger", LEDGERS, ids=[p.name for p in LEDGERS])
def test_committed_ledger_records_match_their_experiment_file(ledger):
    """Changing an experiment file (or a file it extends) so that a committed record's spec changes makes the record
    stale: it stops counting in every result. Such a change must come with the retrained runs."""
    exp = load_experiment(REPO / "examples" / "audio_clevrgan" / "experiments" / f"{ledger.name[:-5]}.toml")
    states = {(m.name, s): ledger_state(ledger, exp, m, s) for m in exp.methods for s in exp.seeds}
    assert "ok" in states.values()
    assert [k for k, v in states.items() if v == "stale"] == []


def test_a_method_can_fade_its_group_in_and_a_misspelt_ramp_key_is_named(tmp_path):
    ramped = BASE + """
[[methods]]
name = "Hard Neg (faded in)"
negatives = ["random", "hard-minibatch"]
group_weights = [1.0, 0.5]
group_weights_start = [1.0, 0.0]
group_weights_ramp = 10
steps = 30
"""
    exp = load_experiment(write(tmp_path, "ramp.toml", ramped.replace("total_steps = 30\n", "")))
    (stage,) = exp.method("Hard Neg (faded in)").stages
    assert stage["group_weights_start"] == [1.0, 0.0] and stage["group_weights_ramp"] == 10
    with pytest.raises(ConfigError, match="did you mean 'group_weights_ramp'"):
        load_experiment(write(tmp_path, "typo.toml", ramped.replace("group_weights_ramp =", "group_weight_ramp =")))
