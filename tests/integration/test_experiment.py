"""`negmine experiment`: init chains, equal budgets, resumable runs, results table."""

import json
import shutil
import textwrap

import pytest
import torch

from negmine.cli import main
from negmine.errors import ConfigError
from negmine.experiment import chain_steps, load_experiment

EXPERIMENT = """
task = "toy"
profile = "small"
seeds = [0, 1]
total_steps = 30

[[methods]]
name = "Random"
negatives = ["random"]
steps = 30

[[methods]]
name = "Hard Neg"
init = "Random@10"
negatives = ["random", "hard-minibatch"]
steps = 20

[[methods]]
name = "Semi"
init = "Hard Neg@10"
negatives = ["random", "hard-minibatch"]
steps = 10
[methods.generators.hard-minibatch]
strategy = "semihard"
"""


def test_chain_budgets(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    assert [chain_steps(exp, m) for m in exp.methods] == [30, 30, 30]
    path.write_text(EXPERIMENT.replace("steps = 10\n[methods", "steps = 11\n[methods").replace('"Random@10"', '"Randm@10"'))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert "did you mean 'Random'" in str(err.value)


def test_unequal_budget_is_rejected(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace('init = "Random@10"', 'init = "Random@20"'))
    with pytest.raises(ConfigError, match="every row must get the same budget"):
        load_experiment(path)


def test_runs_chains_and_skips_finished(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "-q"]) == 0
    captured = capsys.readouterr()
    assert "| Hard Neg | 30 | 1 |" in captured.out
    hard = json.loads((out / "hard-neg" / "seed-0" / "config.json").read_text())
    assert hard["stages"][0]["init"].endswith("random/seed-0/checkpoints/step-10.pt")
    # every child continues the lr schedule where its weights left the chain (Random@10, then Hard Neg@10)
    assert hard["lr_schedule_start"] == 10
    assert json.loads((out / "semi" / "seed-0" / "config.json").read_text())["lr_schedule_start"] == 20
    assert json.loads((out / "random" / "seed-0" / "config.json").read_text())["lr_schedule_start"] == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"Random", "Hard Neg", "Semi"}
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "-q"]) == 0
    assert capsys.readouterr().err.count("[skip]") == 3


def test_method_filter_runs_the_chain_it_needs(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--method", "Hard Neg", "-q"]) == 0
    err = capsys.readouterr().err
    assert "[train] Random seed 0" in err and "[train] Hard Neg seed 0" in err and "Semi" not in err
    assert not (out / "semi").exists()
    code = main(["experiment", str(path), "--out", str(out), "--method", "Hard neg", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'Hard Neg'" in err and "Traceback" not in err


def test_lr_schedule_choice_is_checked(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('lr_schedule = "restrat"\n' + EXPERIMENT)
    with pytest.raises(ConfigError, match="did you mean 'restart'"):
        load_experiment(path)
    path.write_text('lr_schedule = "restart"\n' + EXPERIMENT)
    assert load_experiment(path).lr_schedule == "restart"


def test_ledger_runs_needed_marks_the_ancestors_of_unfinished_runs(tmp_path):
    from negmine.experiment import ledger_runs_needed, order

    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    methods = order(exp)
    everything = {"Random": True, "Hard Neg": True, "Semi": True}
    nothing_here = dict.fromkeys(everything, False)
    assert ledger_runs_needed(exp, methods, everything, nothing_here) == set()
    # Semi not finished: its parent's checkpoint is needed, and the grandparent's for the parent
    assert ledger_runs_needed(exp, methods, {**everything, "Semi": False}, nothing_here) == {"Random", "Hard Neg",
                                                                                              "Semi"}
    # ... unless the parent run sits finished (with its checkpoints) in the run directory
    assert ledger_runs_needed(exp, methods, {**everything, "Semi": False},
                              {**nothing_here, "Hard Neg": True}) == {"Semi"}


def test_ledger_spans_lost_run_directories(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    ledger = tmp_path / "ledger"
    first = tmp_path / "first"
    assert main(["experiment", str(path), "--out", str(first), "--seed", "0", "--ledger", str(ledger), "-q"]) == 0
    capsys.readouterr()
    recorded = sorted(p.relative_to(ledger).as_posix() for p in ledger.rglob("*.json"))
    assert recorded == [f"{m}/seed-0/{f}" for m in ("hard-neg", "random", "semi")
                        for f in ("config.json", "eval-test.json", "lineage.json", "provenance.json", "spec.json",
                                  "summary.json")]
    expected = json.loads((first / "results.json").read_text())["methods"]

    # a new session: the run directory is gone, the ledger is not; nothing trains and the results are the same
    second = tmp_path / "second"
    assert main(["experiment", str(path), "--out", str(second), "--seed", "0", "--ledger", str(ledger), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("finished (ledger)") == 3 and "[train]" not in err
    assert json.loads((second / "results.json").read_text())["methods"] == expected
    report = tmp_path / "report"
    assert main(["experiment", str(path), "--out", str(report), "--ledger", str(ledger), "--report-only", "-q"]) == 0
    assert "[train]" not in capsys.readouterr().err and not (report / "random").exists()
    assert json.loads((report / "results.json").read_text())["methods"] == expected
    assert "3 run(s) of the ledger recorded at commit" in (report / "results.md").read_text()

    # a lost record of the last child: it and the chain it starts from train again; the ledger keeps its records
    # and reports how far the retrained runs are from them (the toy task is deterministic: no difference)
    for f in (ledger / "semi" / "seed-0").iterdir():
        f.unlink()
    third = tmp_path / "third"
    assert main(["experiment", str(path), "--out", str(third), "--seed", "0", "--ledger", str(ledger), "-q"]) == 0
    err = capsys.readouterr().err
    assert all(f"[train] {m} seed 0" in err for m in ("Random", "Hard Neg", "Semi"))
    assert err.count("largest difference from the ledger") == 2 and "+0.00 points" in err
    assert (ledger / "semi" / "seed-0" / "eval-test.json").exists()
    assert json.loads((third / "results.json").read_text())["methods"] == expected


def _tamper_run(record, delta):
    """Make a record look like another run of the same method: other validation numbers while training (another
    identity) and another evaluation, as a retrain on another machine gives."""
    summary = json.loads((record / "summary.json").read_text())
    for e in summary["evaluations"]:
        e["mean@10"] += delta
    (record / "summary.json").write_text(json.dumps(summary))
    ev = json.loads((record / "eval-test.json").read_text())
    ev["retrieval"]["mean@10"] += delta
    (record / "eval-test.json").write_text(json.dumps(ev))
    lineage = json.loads((record / "lineage.json").read_text())
    from negmine.experiment import run_identity

    lineage["run"] = run_identity(record)
    (record / "lineage.json").write_text(json.dumps(lineage))


def test_children_pair_with_the_parent_run_they_started_from(tmp_path, capsys):
    """A retrained parent that comes out different replaces its record; the records trained from the earlier run
    keep pairing with that run (kept under earlier/), the new children with the new one."""
    from negmine.experiment import collect, paired_difference, read_lineage

    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    ledger = tmp_path / "ledger"
    assert main(["experiment", str(path), "--out", str(tmp_path / "a"), "--seed", "0", "--ledger", str(ledger),
                 "-q"]) == 0
    random_run = read_lineage(ledger / "random" / "seed-0")["run"]
    assert read_lineage(ledger / "semi" / "seed-0")["ancestors"] == {
        "Random": random_run, "Hard Neg": read_lineage(ledger / "hard-neg" / "seed-0")["run"]}
    # the ledger's Random and Hard Neg records came from other runs (a machine that trains differently), and the
    # Semi record is lost: Random and Hard Neg train again (identically here) and differ from their records
    _tamper_run(ledger / "random" / "seed-0", -0.05)
    _tamper_run(ledger / "hard-neg" / "seed-0", -0.02)
    for name in ("lineage.json",):  # Hard Neg's record as written before lineages existed
        (ledger / "hard-neg" / "seed-0" / name).unlink()
    old_random = read_lineage(ledger / "random" / "seed-0")["run"]
    old_hard = read_lineage(ledger / "hard-neg" / "seed-0")["run"]
    for f in (ledger / "semi" / "seed-0").iterdir():
        f.unlink()
    capsys.readouterr()
    out = tmp_path / "b"
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--ledger", str(ledger), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("the new run replaces the record, which moves to earlier/") == 2, err
    assert (ledger / "random" / "seed-0" / "earlier" / old_random / "eval-test.json").exists()
    # the old Hard Neg (written before lineages) is stamped as trained from the old Random
    stamped = read_lineage(ledger / "hard-neg" / "seed-0" / "earlier" / old_hard)
    assert stamped["ancestors"] == {"Random": old_random}
    exp = load_experiment(path)
    results = collect(exp, tmp_path / "nowhere", ledger)
    new_semi = results["methods"]["Semi"]
    assert new_semi["lineage"][0]["ancestors"]["Random"] == results["methods"]["Random"]["lineage"][0]["run"]
    # paired with the current Random: the runs of one lineage, a difference of the real runs
    d = paired_difference(results, "Semi", "Random", "R@10")
    want = results["methods"]["Semi"]["seeds"][0]["R@10"] - results["methods"]["Random"]["seeds"][0]["R@10"]
    assert abs(d["per_seed"][0] - want) < 1e-12 and d["unpaired"] == []
    # a record trained from the earlier Random pairs with the earlier one
    results["methods"]["Semi"]["lineage"][0]["ancestors"]["Random"] = old_random
    d = paired_difference(results, "Semi", "Random", "R@10")
    earlier = results["methods"]["Random"]["earlier"][0][old_random]["R@10"]
    assert abs(d["per_seed"][0] - (results["methods"]["Semi"]["seeds"][0]["R@10"] - earlier)) < 1e-12
    # ... and a run whose baseline run is recorded nowhere is not paired at all
    results["methods"]["Semi"]["lineage"][0]["ancestors"]["Random"] = "0" * 16
    assert paired_difference(results, "Semi", "Random", "R@10") is None


def test_ledger_record_of_another_configuration_is_stale(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    ledger = tmp_path / "ledger"
    assert main(["experiment", str(path), "--out", str(tmp_path / "a"), "--seed", "0", "--method", "Hard Neg",
                 "--ledger", str(ledger), "-q"]) == 0
    before = json.loads((ledger / "hard-neg" / "seed-0" / "eval-test.json").read_text())
    capsys.readouterr()
    # the parent's margin changes: both records are stale (the child's spec holds its parent's)
    path.write_text(textwrap.dedent(EXPERIMENT).replace('[[methods]]\nname = "Random"',
                                                        '[settings]\nmargin = 0.5\n\n[[methods]]\nname = "Random"', 1))
    report = tmp_path / "report"
    assert main(["experiment", str(path), "--out", str(report), "--ledger", str(ledger), "--report-only", "-q"]) == 0
    assert json.loads((report / "results.json").read_text())["methods"]["Hard Neg"]["seeds"] == {}
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(tmp_path / "b"), "--seed", "0", "--method", "Hard Neg",
                 "--ledger", str(ledger), "-q"]) == 0
    err = capsys.readouterr().err
    assert "[ledger] Hard Neg seed 0: the record was made with another configuration (differs in init.from.margin, margin)" \
        in err and "[train] Random seed 0" in err and "[train] Hard Neg seed 0" in err
    spec = json.loads((ledger / "hard-neg" / "seed-0" / "spec.json").read_text())
    assert spec["init"]["from"]["margin"] == 0.5 and spec["margin"] == 0.5
    assert json.loads((ledger / "hard-neg" / "seed-0" / "eval-test.json").read_text()) != before


def test_children_can_continue_the_parents_optimizer_state(tmp_path, capsys):
    import torch

    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT).replace('init = "Random@10"', 'init = "Random@10"\ninit_optimizer = true'))
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--method", "Hard Neg", "-q"]) == 0
    parent = torch.load(out / "random" / "seed-0" / "checkpoints" / "step-10.pt", weights_only=False)["optimizer"]
    child = torch.load(out / "hard-neg" / "seed-0" / "checkpoints" / "best.pt", weights_only=False)
    steps = {int(s["step"]) for s in child["optimizer"]["state"].values()}
    # Adam's step count went on from the parent's 10 (a fresh optimizer would count from 0)
    assert {int(s["step"]) for s in parent["state"].values()} == {10}
    assert min(steps) == 10 + child["step_in_stage"] > 10
    config = json.loads((out / "hard-neg" / "seed-0" / "config.json").read_text())
    assert config["stages"][0]["init_optimizer"] is True


def test_init_optimizer_needs_a_checkpoint_with_optimizer_state(tmp_path):
    from negmine.config import build_config
    from negmine.plugins import get_plugin_manager

    gens = get_plugin_manager().generators()
    with pytest.raises(ConfigError, match="init_optimizer: needs init = a checkpoint"):
        build_config({"stages": [{"steps": 1, "negatives": ["random"], "init_optimizer": True}]}, gens)
    with pytest.raises(ConfigError, match="init_optimizer: expected true or false"):
        build_config({"stages": [{"steps": 1, "negatives": ["random"], "init": str(tmp_path),
                                  "init_optimizer": "yes"}]}, gens)


def test_re_evaluate_replaces_ledger_evaluations_without_training(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    ledger, out = tmp_path / "ledger", tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--method", "Hard Neg",
                 "--ledger", str(ledger), "-q"]) == 0
    record = ledger / "hard-neg" / "seed-0"
    trained_at = json.loads((record / "provenance.json").read_text())
    # an evaluation that changed since: the ledger holds an older one (here: tampered)
    old = json.loads((record / "eval-test.json").read_text())
    old["retrieval"]["mean@1"] = -1.0
    (record / "eval-test.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--method", "Hard Neg",
                 "--ledger", str(ledger), "--re-evaluate", "-q"]) == 0
    err = capsys.readouterr().err
    assert "[train]" not in err and err.count("[re-eval]") == 2
    assert json.loads((record / "eval-test.json").read_text()) == json.loads((out / "hard-neg" / "seed-0" /
                                                                               "eval-test.json").read_text())
    provenance = json.loads((record / "provenance.json").read_text())
    assert provenance["commit"] == trained_at["commit"] and set(provenance["evaluated"]) == {"commit", "machine"}
    header = (out / "results.md").read_text()
    assert "2 run(s) of the ledger recorded at commit" in header and "2 run(s) of the ledger re-evaluated at" in header
    # runs recorded only in the ledger cannot be evaluated again, and say so
    assert main(["experiment", str(path), "--out", str(tmp_path / "elsewhere"), "--seed", "0", "--method", "Hard Neg",
                 "--ledger", str(ledger), "--re-evaluate", "-q"]) == 0
    assert capsys.readouterr().err.count("not re-evaluated: its run directory is not in --out") == 2
    code = main(["experiment", str(path), "--out", str(out), "--report-only", "--re-evaluate", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "exclude each other" in err and "Traceback" not in err


def test_machine_record_is_read_once_per_process(monkeypatch):
    import subprocess

    from negmine import experiment

    experiment._machine_record_once.cache_clear()
    first = experiment.machine_record()
    # a commit made while an experiment runs does not change what its later records name
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: "abc1234 (later)")
    assert experiment.machine_record() == first and experiment.machine_record() is not first
    experiment._machine_record_once.cache_clear()
    assert experiment.machine_record()["commit"].startswith("abc1234 (later)")
    experiment._machine_record_once.cache_clear()


def test_baseline_names_are_checked(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nbaseline = "Hard Nge"\n'))
    with pytest.raises(ConfigError, match="baseline names unknown method 'Hard Nge' \\(did you mean 'Hard Neg'"):
        load_experiment(path)
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nbaseline = "Semi"\n'))
    with pytest.raises(ConfigError, match="baseline names the method itself"):
        load_experiment(path)
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nbaseline = "Hard Neg"\n'))
    assert load_experiment(path).method("Semi").baseline == "Hard Neg"


def test_results_show_paired_differences_against_each_baseline(tmp_path):
    from negmine.experiment import render_results

    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nbaseline = "Hard Neg"\n'))
    exp = load_experiment(path)

    def method(per_seed):  # {seed: R@1}
        vals = list(per_seed.values())
        mean = sum(vals) / len(vals)
        return {"chain_steps": 30, "seeds": {s: {"R@1": v, "rendered": 1 - v} for s, v in per_seed.items()},
                "stats": {"R@1": {"mean": mean, "std": 0.0, "n": len(vals)},
                          "rendered": {"mean": 1 - mean, "std": 0.0, "n": len(vals)}}}

    results = {"methods": {"Random": method({0: 0.10, 1: 0.20}), "Hard Neg": method({0: 0.30, 1: 0.25}),
                           "Semi": method({0: 0.35, 1: 0.20, 2: 0.9})}}
    text = render_results(exp, results)
    # Semi - Hard Neg on the shared seeds 0 and 1: +5.0 and -5.0 points, mean 0.0, std 7.1 (seed 2 has no pair)
    assert "| Semi | Hard Neg | +0.0 ± 7.1 (0: +5.0, 1: -5.0) | +0.0 ± 7.1 (0: -5.0, 1: +5.0) |" in text
    assert "| method | baseline | R@1 | rendered |" in text  # the rendered-scene test is compared too
    # and against the first method, as before: Semi - Random = +25.0, +0.0
    assert "| Semi | +12.5 ± 17.7 | 0: +25.0, 1: +0.0 |" in text


def test_method_settings_reach_its_runs_only(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nsettings = { warmup_steps = 4, grad_clip = 2.0 }\n'))
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--ledger", str(ledger), "-q"]) == 0
    semi = json.loads((out / "semi" / "seed-0" / "config.json").read_text())
    hard = json.loads((out / "hard-neg" / "seed-0" / "config.json").read_text())
    assert (semi["warmup_steps"], semi["grad_clip"]) == (4, 2.0)
    assert (hard["warmup_steps"], hard["grad_clip"]) == (0, 0.0)
    spec = json.loads((ledger / "semi" / "seed-0" / "spec.json").read_text())
    assert spec["warmup_steps"] == 4 and "warmup_steps" not in spec["init"]["from"]
    # a method without settings keeps the spec it had before methods could have settings (ledgers stay valid)
    assert "warmup_steps" not in json.loads((ledger / "hard-neg" / "seed-0" / "spec.json").read_text())


def test_method_settings_are_checked(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nsettings = { warmup_step = 4, seed = 3 }\n'))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    text = str(err.value)
    assert "unknown config key 'warmup_step' (did you mean 'warmup_steps'?)" in text
    assert "settings cannot set 'seed'" in text
    path.write_text(EXPERIMENT.replace('name = "Semi"\n', 'name = "Semi"\nsettings = 3\n'))
    with pytest.raises(ConfigError, match="settings must be a table"):
        load_experiment(path)


STOP_IN_HARD_NEG = """
from negmine import hookimpl


@hookimpl
def negmine_step_end(trainer, step, metrics):
    if step == 15 and "hard-neg" in str(trainer.run_dir):
        raise KeyboardInterrupt
"""


def test_interrupted_child_resumes_with_out_spelled_another_way(tmp_path, capsys, monkeypatch):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT).replace('total_steps = 30', 'total_steps = 30\n[settings]\ncheckpoint_every = 5'))
    stopper = tmp_path / "stopper.py"
    stopper.write_text(STOP_IN_HARD_NEG)
    monkeypatch.chdir(tmp_path)
    args = ["experiment", "e.toml", "--seed", "0", "--method", "Hard Neg", "-q"]
    assert main(["-p", str(stopper), *args, "--out", "out"]) == 130
    hard = tmp_path / "out" / "hard-neg" / "seed-0"
    assert json.loads((hard / "config.json").read_text())["stages"][0]["init"].startswith("out/")
    capsys.readouterr()
    # from another directory the stored relative path names no file: the mismatch is reported, key and both values
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["experiment", str(path), "--seed", "0", "--method", "Hard Neg", "-q", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "stages[0].init ('out/random/seed-0/checkpoints/step-10.pt', now '" in err and "Traceback" not in err
    monkeypatch.chdir(tmp_path)
    # the child's init checkpoint is now spelled absolute; it is the same file, so the run resumes
    assert main([*args, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "[resume] Hard Neg seed 0" in err
    assert json.loads((hard / "summary.json").read_text())["steps"] == 20


EVALUATED = EXPERIMENT.replace("total_steps = 30\n", "total_steps = 30\n\n[settings]\neval_every = 5\n")


def run_seed_0(path, out, ledger, capsys):
    """Run the experiment's seed 0 with the ledger; return what it printed on stderr."""
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(out), "--seed", "0", "--ledger", str(ledger), "-q"]) == 0
    return capsys.readouterr().err


def lose_record(method_dir):
    for f in (method_dir / "seed-0").iterdir():
        f.unlink()


def test_recorded_parents_retrain_only_to_where_their_children_start(tmp_path, capsys):
    """A lost child record: its recorded ancestors train again only as far as their children start (checked
    against their records' validation evaluations so far), and the child pairs with the records."""
    from negmine.experiment import collect, paired_difference, read_lineage

    path = tmp_path / "e.toml"
    path.write_text(EVALUATED)
    ledger = tmp_path / "ledger"
    run_seed_0(path, tmp_path / "a", ledger, capsys)
    expected = json.loads((tmp_path / "a" / "results.json").read_text())["methods"]
    lose_record(ledger / "semi")
    out = tmp_path / "b"
    err = run_seed_0(path, out, ledger, capsys)
    for m in ("Random", "Hard Neg"):
        assert f"[train] {m} seed 0 to step 10 (its children start there)" in err
        assert f"[prefix] {m} seed 0: the same run as the ledger's record up to step 10 (3 validation" in err
    assert "[train] Semi seed 0 -> " in err and "largest difference from the ledger" not in err
    for slug in ("random", "hard-neg"):
        run = out / slug / "seed-0"
        assert not (run / "summary.json").exists() and (run / "checkpoints" / "step-10.pt").exists()
        assert json.loads((run / "prefix.json").read_text())["step"] == 10
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 10
    ids = {m: read_lineage(ledger / slug / "seed-0")["run"] for m, slug in (("Random", "random"), ("Hard Neg", "hard-neg"))}
    assert read_lineage(ledger / "semi" / "seed-0")["ancestors"] == ids
    # the toy task is deterministic: the child is the run it was, and its paired difference is taken
    assert json.loads((out / "results.json").read_text())["methods"] == expected
    exp = load_experiment(path)
    assert paired_difference(collect(exp, out, ledger), "Semi", "Hard Neg", "R@10")["unpaired"] == []

    # again with the same run directory, the child's run and record lost: the prefixes are there already and only
    # the child trains
    shutil.rmtree(out / "semi")
    lose_record(ledger / "semi")
    err = run_seed_0(path, out, ledger, capsys)
    assert err.count("trained to step 10 already, the ledger's run") == 2 and "[train] Random" not in err
    assert "[train] Semi seed 0 -> " in err
    assert json.loads((out / "results.json").read_text())["methods"] == expected

    # a record from a machine that trains differently: the prefix differs at its first evaluation, so the parent
    # trains to the end (resuming from step 10) and replaces the record, as a full retrain does
    _tamper_run(ledger / "random" / "seed-0", -0.05)
    lose_record(ledger / "semi")
    out = tmp_path / "c"
    err = run_seed_0(path, out, ledger, capsys)
    assert "[prefix] Random seed 0: differs from the ledger's record (step 5: mean@10" in err
    assert "[resume] Random seed 0 -> " in err and (out / "random" / "seed-0" / "summary.json").exists()
    assert "the new run replaces the record, which moves to earlier/" in err
    # the full retrain is the run an uninterrupted training gives
    assert (json.loads((out / "random" / "seed-0" / "summary.json").read_text())["evaluations"]
            == json.loads((tmp_path / "a" / "random" / "seed-0" / "summary.json").read_text())["evaluations"])


def test_trainer_stop_at_then_resume_equals_an_uninterrupted_run(tmp_path):
    from negmine.config import build_task, build_task_config
    from negmine.plugins import PluginManager
    from negmine.trainer import Trainer

    pm = PluginManager()
    pm.load_entry_points()

    def trainer(run_dir, resume=False):
        raw = {"task": "toy", "profile": "small", "seed": 1, "run_dir": str(run_dir), "eval_every": 4,
               "stages": [{"name": "a", "steps": 6, "negatives": ["random"]},
                          {"name": "b", "steps": 6, "negatives": ["random", "hard-minibatch"]}]}
        task = build_task(pm, raw)
        return Trainer(task, build_task_config(pm, task, raw), plugins=pm, resume=resume)

    full = trainer(tmp_path / "full").fit()
    for stop in (4, 6, 9):  # mid-stage, at the end of a stage, mid-stage of the second
        t = trainer(tmp_path / f"cut{stop}")
        t.stop_at = stop
        partial = t.fit()
        assert t.stopped and partial["stopped_at"] == stop
        assert not (tmp_path / f"cut{stop}" / "summary.json").exists()
        assert [e["step"] for e in partial["evaluations"]] == [e["step"] for e in full["evaluations"] if e["step"] <= stop]
        again = trainer(tmp_path / f"cut{stop}", resume=True)
        again.stop_at = stop  # resumed at stop_at: stops at once, trains nothing
        assert again.fit()["stopped_at"] == stop
        resumed = trainer(tmp_path / f"cut{stop}", resume=True).fit()
        assert resumed["evaluations"] == full["evaluations"] and resumed["steps"] == 12


def test_per_word_and_in_context_rows_reach_the_results_but_not_the_report_tables(tmp_path):
    from negmine.experiment import _metric_rows, render_results

    evaluation = {"retrieval": {"mean@1": 0.5, "mean@5": 0.8, "mean@10": 0.9},
                  "attributes": {"per_group": {"shape": 0.6, "size": 0.9}, "mean": 0.75,
                                 "per_word": {"cube": {"attribute": "shape", "auc": 0.55},
                                              "large": {"attribute": "size", "auc": 0.95}},
                                 "context": {"mean": 0.7, "per_group": {"shape": 0.65}}}}
    rows = _metric_rows(evaluation)
    assert rows["attr:word:shape:cube"] == 0.55 and rows["attr:word:size:large"] == 0.95
    assert rows["attr:context:shape"] == 0.65 and rows["attr:shape"] == 0.6
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    stats = {k: {"mean": v, "std": 0.0, "n": 1} for k, v in rows.items()}
    results = {"methods": {m.name: {"chain_steps": 30, "seeds": {0: rows}, "stats": stats} for m in exp.methods}}
    text = render_results(exp, results)
    assert "attr:shape" in text and "attr:word:" not in text and "attr:context:" not in text


def test_runs_record_their_data_and_pairs_across_two_builds_or_thread_counts_are_flagged(tmp_path, capsys):
    """Each run's provenance names the data it trained on (the task's digest); a run resumed on other data, a ledger
    holding records of other data, and paired differences across two builds are all reported; so are paired
    differences between runs trained with different CPU thread counts."""
    import re

    from negmine.experiment import MIXED_NOTE, THREADS_NOTE

    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace("total_steps = 30", "total_steps = 30\n[settings]\ncheckpoint_every = 5"))
    stopper = tmp_path / "stopper.py"
    stopper.write_text(STOP_IN_HARD_NEG)
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    args = ["experiment", str(path), "--seed", "0", "--method", "Hard Neg", "--out", str(out), "--ledger", str(ledger),
            "-q"]
    assert main(["-p", str(stopper), *args]) == 130
    digest = json.loads((ledger / "random" / "seed-0" / "provenance.json").read_text())["data"]
    assert len(digest) == 16 and int(digest, 16) >= 0
    started = out / "hard-neg" / "seed-0" / "provenance.json"
    assert json.loads(started.read_text())["data"] == digest  # both rows trained on the same toy data

    # as if the interrupted run had started on another build, and the parent's record came from a third one
    for file, other in ((started, "f" * 16), (ledger / "random" / "seed-0" / "provenance.json", "0" * 16)):
        file.write_text(json.dumps({**json.loads(file.read_text()), "data": other}))
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"Hard Neg seed 0: resumes on data {digest}, but it started on data {'f' * 16}" in err
    assert f"this data is {digest}, but 1 record(s) of the ledger trained on data {'0' * 16} (random/seed-0)" in err

    # the report, from the ledger alone: Hard Neg (started on ffff...) against Random (0000...) mixes two builds
    report = tmp_path / "report"
    assert main(["experiment", str(path), "--out", str(report), "--ledger", str(ledger), "--report-only", "-q"]) == 0
    text = (report / "results.md").read_text()
    assert "| Hard Neg | " in text and "0: " in text and "†" in text and MIXED_NOTE in text
    assert f", data {'0' * 16}" in text and f", data {'f' * 16}" in text  # the header lists the builds recorded
    # records of one build (or without digests, made before they were kept) are not flagged
    for file in ledger.glob("*/seed-0/provenance.json"):
        file.write_text(json.dumps({k: v for k, v in json.loads(file.read_text()).items() if k != "data"}))
    assert main(["experiment", str(path), "--out", str(report), "--ledger", str(ledger), "--report-only", "-q"]) == 0
    assert MIXED_NOTE not in (report / "results.md").read_text()

    # runs trained with different CPU thread counts (their provenance's machine line) are flagged too, apart
    def threads(slug, n):
        file = ledger / slug / "seed-0" / "provenance.json"
        record = json.loads(file.read_text())
        machine = re.sub(r"\d+ threads", f"{n} threads", record["machine"])
        assert machine != record["machine"] or f"{n} threads" in machine  # the line names a thread count
        file.write_text(json.dumps({**record, "machine": machine}))

    threads("random", 1), threads("hard-neg", 2)
    assert main(["experiment", str(path), "--out", str(report), "--ledger", str(ledger), "--report-only", "-q"]) == 0
    text = (report / "results.md").read_text()
    assert THREADS_NOTE in text and "‡" in text and MIXED_NOTE not in text and "†" not in text
    threads("hard-neg", 1)
    assert main(["experiment", str(path), "--out", str(report), "--ledger", str(ledger), "--report-only", "-q"]) == 0
    assert THREADS_NOTE not in (report / "results.md").read_text()


def test_a_method_added_after_its_parent_finished_names_the_missing_checkpoint_and_the_way_on(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(EVALUATED)  # validation evaluations let a retrained prefix be checked against the record
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    assert main(["experiment", str(path), "--out", str(out), "--ledger", str(ledger), "--seed", "0", "--method", "Random",
                 "-q"]) == 0
    # a method starting from Random@20: the finished run kept step 10 (Hard Neg's start), not step 20
    path.write_text(EVALUATED + '\n[[methods]]\nname = "Late"\ninit = "Random@20"\nnegatives = ["random"]\nsteps = 10\n')
    args = ["experiment", str(path), "--out", str(out), "--ledger", str(ledger), "--seed", "0", "--method", "Late", "-q"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Late seed 0 starts from Random@20, but the finished run" in err and "kept no checkpoint at step 20" in err
    assert "Move that run directory away" in err and "Traceback" not in err and not (out / "late").exists()
    # as the message says: moved away, Random is trained again to step 20, found to be the record's run, and Late trains
    (out / "random").rename(tmp_path / "random-finished")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "[train] Random seed 0 to step 20" in err and "the same run as the ledger's record" in err
    assert "[train] Late seed 0" in err
    assert (ledger / "late" / "seed-0" / "eval-test.json").exists()


def test_a_finished_run_of_another_thread_count_does_not_replace_its_record(tmp_path, capsys):
    """A run trained outside the ledger with another CPU thread count, left in --out, is no retrain of the record:
    the runner stops before the ledger changes and says how to go on; with the same thread count it replaces the
    record as a retrain that came out different."""
    import re

    from negmine.experiment import read_lineage

    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT)
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    args = ["experiment", str(path), "--out", str(out), "--ledger", str(ledger), "--seed", "0", "--method", "Random",
            "-q"]
    assert main(args) == 0
    record, run_dir = ledger / "random" / "seed-0", out / "random" / "seed-0"
    _tamper_run(record, -0.05)  # the record came from another run
    provenance = json.loads((record / "provenance.json").read_text())
    machine = provenance["machine"]
    assert re.search(r"\d+ threads", machine)
    (record / "provenance.json").write_text(json.dumps({**provenance, "machine": re.sub(r"\d+ threads", "7 threads",
                                                                                          machine)}))
    kept = {f.name: f.read_text() for f in record.iterdir()}
    capsys.readouterr()
    for extra in ([], ["--re-evaluate"]):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert "Random seed 0: the finished run" in err and "with 7, and the two differ" in err, err
        assert "Move that run directory away" in err and "Traceback" not in err
        assert {f.name: f.read_text() for f in record.iterdir()} == kept and not (record / "earlier").exists()
    # the same thread count: a retrain that came out different replaces the record
    (record / "provenance.json").write_text(json.dumps(provenance))
    assert main(args) == 0
    assert "the new run replaces the record" in capsys.readouterr().err
    assert read_lineage(record)["run"] == read_lineage(run_dir)["run"]


def test_a_slow_start_is_logged_at_the_step_against_the_other_seeds(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent("""
        task = "toy"
        profile = "small"
        seeds = [0, 1]
        [settings]
        eval_every = 10
        [[methods]]
        name = "Random"
        negatives = ["random"]
        steps = 10
        """))
    ledger = tmp_path / "ledger"
    record = ledger / "random" / "seed-0"
    record.mkdir(parents=True)
    (record / "eval-test.json").write_text(json.dumps({"retrieval": {"mean@1": 1.0, "mean@5": 1.0, "mean@10": 1.0}}))
    for other_r10, expect in ((1.0, True), (0.0, False)):
        (record / "summary.json").write_text(json.dumps({"initial": {"step": 0, "mean@10": 0.0},
                                                         "evaluations": [{"step": 10, "mean@10": other_r10}]}))
        out = tmp_path / f"out-{other_r10}"
        assert main(["experiment", str(path), "--out", str(out), "--ledger", str(ledger), "--seed", "1", "-q"]) == 0
        err = capsys.readouterr().err
        assert ("[slow start] Random seed 1: validation R@10" in err) is expect, err
        if expect:
            mine = json.loads((out / "random" / "seed-1" / "summary.json").read_text())["evaluations"][-1]["mean@10"]
            assert f"{100 * (1 - mine):.1f} points below seed 0 at that step (100.0)" in err
        shutil.rmtree(ledger / "random" / "seed-1")  # the next round trains seed 1 again


def test_retrain_trains_a_recorded_method_again_and_replaces_a_different_record(tmp_path, capsys):
    """--retrain: a method the ledger records is trained again (its chain's parents only as far as it needs); a
    retrain that differs from the record (another machine) replaces it, the record kept under earlier/; one that is
    the same run leaves the record alone. Names are checked."""
    from negmine.experiment import read_lineage

    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    ledger = tmp_path / "ledger"
    base = ["experiment", str(path), "--seed", "0", "--ledger", str(ledger), "-q"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    kept = (ledger / "semi" / "seed-0" / "eval-test.json").read_text()
    capsys.readouterr()

    def recorded_retrieval():
        return json.loads((ledger / "semi" / "seed-0" / "eval-test.json").read_text())["retrieval"]

    retrieval = recorded_retrieval()
    # without --retrain the record stands and nothing trains
    assert main([*base, "--out", str(tmp_path / "b"), "--method", "Semi"]) == 0
    assert "[skip] Semi seed 0: finished (ledger)" in capsys.readouterr().err
    # the same run again: trained, and the record kept as it was
    assert main([*base, "--out", str(tmp_path / "c"), "--method", "Semi", "--retrain", "Semi"]) == 0
    err = capsys.readouterr().err
    assert "[train] Semi seed 0" in err and "the same run: the ledger keeps its record" in err, err
    assert "[train] Random seed 0" in err and "[train] Hard Neg seed 0" in err  # the chain it starts from
    assert (ledger / "semi" / "seed-0" / "eval-test.json").read_text() == kept
    # a record made elsewhere (another run of Semi): the retrain replaces it and keeps it under earlier/
    _tamper_run(ledger / "semi" / "seed-0", -0.05)
    old = read_lineage(ledger / "semi" / "seed-0")["run"]
    assert main([*base, "--out", str(tmp_path / "d"), "--method", "Semi", "--retrain", "Semi"]) == 0
    err = capsys.readouterr().err
    assert "the new run replaces the record, which moves to earlier/" in err, err
    assert (ledger / "semi" / "seed-0" / "earlier" / old / "eval-test.json").exists()
    assert recorded_retrieval() == retrieval and read_lineage(ledger / "semi" / "seed-0")["run"] != old
    # names: an unknown one with the closest, one not trained by this command, and with --report-only
    assert main([*base, "--out", str(tmp_path / "e"), "--method", "Semi", "--retrain", "Semy"]) == 2
    assert "unknown method 'Semy' (did you mean 'Semi'?)" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "e"), "--method", "Semi", "--retrain", "Random"]) == 0
    assert "[train] Random seed 0" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "e"), "--method", "Hard Neg", "--retrain", "Semi"]) == 2
    assert "retrain 'Semi': not among the methods this run trains (name it with --method too)" in \
        capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "e"), "--report-only", "--retrain", "Semi"]) == 2
    assert "--retrain trains" in capsys.readouterr().err
    assert main(["experiment", str(path), "--out", str(tmp_path / "e"), "--retrain", "Semi", "--method", "Semi"]) == 2
    assert "it needs --ledger" in capsys.readouterr().err


def test_siblings_started_from_different_runs_of_their_shared_ancestor_are_marked():
    """A row paired with a sibling (both start from DaveNet, neither from the other) is marked § on the seeds where
    they started from different DaveNet runs (one retrained elsewhere); the same runs leave it unmarked."""
    from negmine.experiment import LINEAGE_MARK, LINEAGE_NOTE, mark_notes, paired_difference, seed_marks

    def method(value, run, **ancestors):
        return {"seeds": {0: {"R@10": value}, 1: {"R@10": value}},
                "lineage": {0: {"run": run, "ancestors": ancestors}, 1: {"run": run + "1", "ancestors": {
                    k: v + "1" for k, v in ancestors.items()}}}}

    results = {"methods": {"DaveNet": method(0.5, "d"), "Hard Neg": method(0.6, "h", DaveNet="d"),
                           "HN+X": method(0.7, "x", DaveNet="d")}}
    results["methods"]["HN+X"]["lineage"][0]["ancestors"]["DaveNet"] = "retrained"  # seed 0 from another DaveNet
    d = paired_difference(results, "HN+X", "Hard Neg", "R@10")
    assert d["mixed_lineage"] == [0] and d["unpaired"] == [] and abs(d["per_seed"][0] - 0.1) < 1e-12
    assert seed_marks(d, 0) == LINEAGE_MARK and seed_marks(d, 1) == "" and mark_notes([d]) == [LINEAGE_NOTE]
    # a baseline in the row's own chain is paired by lineage as before, never marked
    assert paired_difference(results, "Hard Neg", "DaveNet", "R@10")["mixed_lineage"] == []


def test_rows_compared_with_a_replaced_record_keep_pairing_with_it(tmp_path, capsys):
    """A row trained from scratch that pairs with Random keeps its difference when Random's record is replaced by a
    retrain that differs (its lineage's paired_with names the earlier run); a row finished after the replacement
    pairs with the new record."""
    from negmine.experiment import collect, paired_difference, read_lineage

    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(EXPERIMENT) + textwrap.dedent("""
        [[methods]]
        name = "Scratch"
        baseline = "Random"
        negatives = ["random", "hard-minibatch"]
        steps = 30
        """))
    ledger = tmp_path / "ledger"
    base = ["experiment", str(path), "--seed", "0", "--ledger", str(ledger), "-q"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    exp = load_experiment(path)
    before = paired_difference(collect(exp, tmp_path / "nowhere", ledger), "Scratch", "Random", "R@10")
    _tamper_run(ledger / "random" / "seed-0", -0.05)  # the record came from another machine
    old = read_lineage(ledger / "random" / "seed-0")["run"]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b"), "--method", "Random", "--retrain", "Random"]) == 0
    assert "the new run replaces the record" in capsys.readouterr().err
    assert read_lineage(ledger / "scratch" / "seed-0")["paired_with"] == {"Random": old}
    assert "paired_with" not in read_lineage(ledger / "semi" / "seed-0")  # in Random's chain: its ancestors say
    # a replaced Hard Neg (neither the first method nor Scratch's baseline) leaves Scratch's lineage alone
    _tamper_run(ledger / "hard-neg" / "seed-0", -0.02)
    assert main([*base, "--out", str(tmp_path / "b"), "--method", "Hard Neg", "--retrain", "Hard Neg"]) == 0
    assert read_lineage(ledger / "scratch" / "seed-0")["paired_with"] == {"Random": old}
    results = collect(exp, tmp_path / "nowhere", ledger)
    after = paired_difference(results, "Scratch", "Random", "R@10")
    assert after["per_seed"][0] == pytest.approx(before["per_seed"][0] + 0.05) and after["unpaired"] == []
    # against the new record it would differ: the earlier one was found
    current = results["methods"]["Scratch"]["seeds"][0]["R@10"] - results["methods"]["Random"]["seeds"][0]["R@10"]
    assert current != pytest.approx(after["per_seed"][0])
    # a Scratch run finished after the replacement (its record gone, trained again) pairs with the new record
    shutil.rmtree(ledger / "scratch" / "seed-0")
    assert main([*base, "--out", str(tmp_path / "b"), "--method", "Scratch"]) == 0
    results = collect(exp, tmp_path / "nowhere", ledger)
    d = paired_difference(results, "Scratch", "Random", "R@10")
    want = results["methods"]["Scratch"]["seeds"][0]["R@10"] - results["methods"]["Random"]["seeds"][0]["R@10"]
    assert d["per_seed"][0] == pytest.approx(want)
