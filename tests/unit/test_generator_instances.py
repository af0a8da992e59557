"""NAME:LABEL sources: one more instance of a registered generator, with options, random stream and telemetry keys
of its own; malformed or unknown names are reported with the rest of the config's problems."""

import json

import pytest

from negmine import Trainer
from negmine.config import build_config, generator_name
from negmine.errors import ConfigError
from negmine.plugins import get_plugin_manager
from negmine.testing import make_task


def test_generator_name():
    assert generator_name("hard-minibatch:all") == "hard-minibatch"
    assert generator_name("hard-minibatch") == "hard-minibatch"


def test_two_instances_train_with_their_own_options_and_keys(tmp_path):
    task = make_task(n=64, seed=0)
    run = tmp_path / "run"
    config = {"steps": 4, "batch_size": 16, "log_every": 1, "eval_size": 8, "device": "cpu",
              "negatives": ["random", "hard-minibatch", "hard-minibatch:semihard"],
              "combine": [["random"], ["hard-minibatch", "hard-minibatch:semihard"]],
              "generators": {"hard-minibatch": {"k": 1}, "hard-minibatch:semihard": {"k": 3, "strategy": "semihard"}}}
    trainer = Trainer(task, config, plugins=get_plugin_manager(), run_dir=str(run), reporter=None)
    trainer.fit()
    gens = trainer._build_generators(trainer.config.stages[0])
    first, second = gens["hard-minibatch"], gens["hard-minibatch:semihard"]
    assert type(first) is type(second) and first.options.k == 1 and second.options.k == 3
    assert second.options.strategy == "semihard" and first.options.strategy != "semihard"
    assert second.name == "hard-minibatch:semihard" and type(second).name == "hard-minibatch"
    assert first.seed != second.seed  # their own random streams
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    for row in rows:
        # telemetry per instance: the default instance gives one negative per anchor, the labelled one up to three
        assert 0 < row["hard-minibatch/side1/count"] <= 16 and 0 <= row["hard-minibatch:semihard/side1/count"] <= 48
        assert row["group1/side1/hardest/hard-minibatch"] + row["group1/side1/hardest/hard-minibatch:semihard"] == \
            pytest.approx(1.0)


def test_instance_names_are_checked_with_every_other_problem():
    gens = get_plugin_manager().generators()
    raw = {"negatives": ["random", "hard-minibach:x", "hard-minibatch:", "hard-minibatch:a b"],
           "generators": {"hard-minibatch:x": {"strategi": "semihard"}, "rnadom:y": {}}}
    with pytest.raises(ConfigError) as err:
        build_config(raw, gens)
    text = str(err.value)
    assert "negatives: unknown generator 'hard-minibach' (did you mean 'hard-minibatch'?)" in text
    assert "'hard-minibatch:': the label after ':' must be letters, digits" in text
    assert "'hard-minibatch:a b': the label after ':' must be letters, digits" in text
    assert "generators.hard-minibatch:x: unknown option 'strategi' (did you mean 'strategy'?)" in text
    assert "generators: unknown generator 'rnadom' (did you mean 'random'?)" in text
