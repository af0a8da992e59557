"""Config validation reports every problem at once, with suggestions."""

import pytest

from negmine.config import build_config, read_config_file
from negmine.errors import ConfigError


@pytest.fixture
def gens(plugin_manager):
    return plugin_manager.generators()


def test_defaults_make_one_stage(gens):
    cfg = build_config({"negatives": ["random", "hard-minibatch"], "steps": 10}, gens)
    assert len(cfg.stages) == 1
    assert cfg.stages[0].combine == (("random",), ("hard-minibatch",))
    assert cfg.total_steps == 10


def test_every_problem_is_reported(gens):
    raw = {
        "stpes": 3,  # typo
        "lr": -1.0,
        "optimizer": "adma",
        "negatives": ["random", "hard-minibath"],
        "generators": {"hard-minibatch": {"strategy": "hardestt", "kk": 2}},
        "batch_size": "big",
    }
    with pytest.raises(ConfigError) as err:
        build_config(raw, gens)
    text = str(err.value)
    assert "did you mean 'steps'" in text
    assert "lr: must be > 0" in text
    assert "did you mean 'adam'" in text
    assert "did you mean 'hard-minibatch'" in text
    assert "unknown option 'kk'" in text and "did you mean 'k'" in text
    assert "batch_size: expected an integer" in text
    assert len(err.value.problems) >= 6


def test_option_values_are_validated(gens):
    with pytest.raises(ConfigError, match="strategy"):
        build_config({"negatives": ["hard-minibatch"], "generators": {"hard-minibatch": {"strategy": "nope"}}}, gens)
    with pytest.raises(ConfigError, match=r"random\.k: must be >= 1, got 0"):
        build_config({"negatives": ["random"], "generators": {"random": {"k": 0}}}, gens)


def test_every_problem_of_every_generator_table_is_reported_with_the_closest_choice(gens):
    """Issue 17, item 6: attrs stops at a table's first bad value and its message is a raw tuple."""
    with pytest.raises(ConfigError) as err:
        build_config({"negatives": ["random", "hard-minibatch"],
                      "generators": {"hard-minibatch": {"strategy": "hardst", "k": 0, "rank_min": "x"},
                                     "random": {"k": -1, "sides": "c"}},
                      "stages": [{"name": "s", "steps": 2, "generators": {"hard-minibatch": {"top_k": 0}}}]}, gens)
    e = err.value
    assert e.problems[:5] == [
        "generators.hard-minibatch.strategy: 'hardst' is not one of hardest, semihard, sample (did you mean "
        "'hardest'?)",
        "generators.hard-minibatch.k: must be >= 1, got 0",
        "generators.hard-minibatch.rank_min: expected int, got str 'x'",
        "generators.random.k: must be >= 1, got -1",
        "generators.random.sides: 'c' is not one of both, a, b",
    ]
    assert "stages[0].generators.hard-minibatch.top_k: must be >= 1, got 0" in e.problems
    assert "Attribute(" not in str(e)
    # a combination checked by the Options class itself is still reported once the values are valid
    with pytest.raises(ConfigError, match=r"generators\.faiss: rank_max \(2\) must be greater than rank_min"):
        build_config({"negatives": ["faiss"], "generators": {"faiss": {"rank_min": 5, "rank_max": 2}}}, gens)


def test_combine_must_cover_negatives(gens):
    with pytest.raises(ConfigError) as err:
        build_config({"negatives": ["random", "hard-minibatch"], "combine": [["random"], ["faiss-x"]]}, gens)
    assert "'faiss-x' is not one of this stage's negatives" in str(err.value)
    assert "'hard-minibatch' is in negatives but in no group" in str(err.value)


def test_stages(gens, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
seed = 3
[generators.hard-minibatch]
k = 2
[[stages]]
name = "warm"
steps = 5
negatives = ["random"]
[[stages]]
name = "hard"
steps = 7
negatives = ["random", "hard-minibatch"]
combine = [["random", "hard-minibatch"]]
[stages.generators.hard-minibatch]
strategy = "semihard"
"""
    )
    cfg = build_config(read_config_file(path), gens)
    assert [s.name for s in cfg.stages] == ["warm", "hard"]
    assert cfg.total_steps == 12
    assert cfg.stages[1].generators["hard-minibatch"] == {"k": 2, "strategy": "semihard"}
    assert cfg.stages[1].combine == (("random", "hard-minibatch"),)


def test_stage_problems(gens):
    raw = {"stages": [{"name": "a", "steps": 0, "negatives": ["random"], "inti": "previous"},
                      {"name": "a", "steps": 2, "negatives": ["random"], "init": "/no/such/run"}]}
    with pytest.raises(ConfigError) as err:
        build_config(raw, gens)
    text = str(err.value)
    assert "stages[0].steps" in text and "did you mean 'init'" in text
    assert "used twice" in text and "/no/such/run" in text


def test_malformed_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("steps = [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(path)


def test_reduction_per_group(gens):
    cfg = build_config({"negatives": ["random", "hard-minibatch"], "reduction": "mean"}, gens)
    assert cfg.stages[0].reduction == ("mean", "mean")
    cfg = build_config({"negatives": ["random", "hard-minibatch"], "reduction": ["mean", "hardest"]}, gens)
    assert cfg.stages[0].reduction == ("mean", "hardest")
    staged = build_config({"reduction": "mean", "stages": [
        {"steps": 2, "negatives": ["random"]},
        {"steps": 2, "negatives": ["random", "hard-minibatch"], "reduction": ["mean", "hardest"]}]}, gens)
    assert [s.reduction for s in staged.stages] == [("mean",), ("mean", "hardest")]
    with pytest.raises(ConfigError) as err:
        build_config({"negatives": ["random", "hard-minibatch"], "reduction": ["mean"],
                      "stages": [{"steps": 1, "reduction": "meen"}]}, gens)
    text = str(err.value)
    assert "did you mean 'mean'" in text and len(err.value.problems) == 1
    with pytest.raises(ConfigError, match="one per group"):
        build_config({"negatives": ["random", "hard-minibatch"], "reduction": ["mean"]}, gens)


def test_group_weights_per_group(gens):
    cfg = build_config({"negatives": ["random", "hard-minibatch"]}, gens)
    assert cfg.stages[0].group_weights == (1.0, 1.0)
    cfg = build_config({"negatives": ["random", "hard-minibatch"], "group_weights": [1, 0.5]}, gens)
    assert cfg.stages[0].group_weights == (1.0, 0.5)
    staged = build_config({"group_weights": 0.5, "stages": [
        {"steps": 1, "negatives": ["random"]},
        {"steps": 2, "negatives": ["random", "hard-minibatch"], "group_weights": [1.0, 0.25]}]}, gens)
    assert [s.group_weights for s in staged.stages] == [(0.5,), (1.0, 0.25)]
    with pytest.raises(ConfigError) as err:
        build_config({"negatives": ["random", "hard-minibatch"], "group_weights": [1.0],
                      "stages": [{"steps": 1, "group_weights": -1}]}, gens)
    assert "stages[0].group_weights: expected a number >= 0, or a list of 2" in str(err.value)


def test_group_weights_ramp_moves_linearly_from_start_to_group_weights(gens):
    cfg = build_config({"negatives": ["random", "hard-minibatch"], "group_weights": [1.0, 0.5],
                        "group_weights_start": [1.0, 0.0], "group_weights_ramp": 4}, gens)
    stage = cfg.stages[0]
    assert [stage.group_weights_at(t) for t in (0, 1, 2, 4, 100)] == [
        (1.0, 0.0), (1.0, 0.125), (1.0, 0.25), (1.0, 0.5), (1.0, 0.5)]
    plain = build_config({"negatives": ["random", "hard-minibatch"], "group_weights": [1.0, 0.5]}, gens).stages[0]
    assert plain.group_weights_at(0) == plain.group_weights_at(99) == (1.0, 0.5)
    # one number for every group; a stage overrides the top level's ramp, and a later stage without its own
    # start takes the top level's
    staged = build_config({"negatives": ["random", "hard-minibatch"], "group_weights_start": 0,
                           "group_weights_ramp": 2, "stages": [
                               {"steps": 3, "group_weights_ramp": 10},
                               {"steps": 3, "group_weights": [2, 2]}]}, gens)
    assert [s.group_weights_at(1) for s in staged.stages] == [(0.1, 0.1), (1.0, 1.0)]


def test_group_weights_ramp_problems_are_all_reported(gens):
    two = {"negatives": ["random", "hard-minibatch"]}
    cases = {
        "group_weights_ramp: 5 steps, but from what? Give group_weights_start": {"group_weights_ramp": 5},
        "group_weights_start: needs group_weights_ramp > 0": {"group_weights_start": [1, 0]},
        "group_weights_ramp: expected an integer >= 0": {"group_weights_start": [1, 0], "group_weights_ramp": -3},
        "group_weights_start: expected a number >= 0, or a list of 2": {"group_weights_start": [1],
                                                                          "group_weights_ramp": 3},
    }
    for message, keys in cases.items():
        with pytest.raises(ConfigError) as err:
            build_config({**two, **keys}, gens)
        assert message in str(err.value), (keys, str(err.value))
    with pytest.raises(ConfigError) as err:  # every problem at once, stage problems named by stage
        build_config({**two, "group_weights_ramp": 5, "stages": [
            {"steps": 1, "group_weights_start": [1, 0, 0]}, {"steps": 1, "group_weights_ramp": -1},
            {"steps": 1, "group_weights_start": [1, 0]}]}, gens)
    text = str(err.value)
    assert len(err.value.problems) == 2 and "stages[0].group_weights_start: expected" in text
    assert "stages[1].group_weights_ramp: expected an integer >= 0" in text and "stages[2]" not in text
