"""`negmine train` / `eval` / `plugins` end to end on the toy task (seconds on a CPU)."""

import json
import textwrap

import pytest
import torch

from negmine.cli import main


def run_cli(*args):
    return main([str(a) for a in args])


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_train_improves_recall_and_eval_writes_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--task", "toy", "--profile", "small", "--steps", "80", "-n", "random",
                   "-n", "hard-minibatch", "--run-dir", run, "-q") == 0
    s = summary(run)
    assert s["final"]["mean@10"] > s["initial"]["mean@10"] + 0.3
    assert s["final"]["mean@10"] > 0.3  # chance is 10 / 200
    for name in ("config.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt",
                 "checkpoints/stage-main.pt"):
        assert (run / name).exists(), name
    lines = [m for m in read_metrics(run) if "loss" in m]
    assert lines and "hard-minibatch/side1/above_positive" in lines[-1] and "random/side0/active" in lines[-1]
    assert run_cli("eval", run, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["retrieval"]["n"] == 200 and (run / "report-test.md").exists()
    # task options can be overridden at evaluation (data moved); other data gives other (lower) recall
    assert run_cli("eval", run, "--json", "--task-option", "data_seed=99") == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["retrieval"]["mean@10"] != out["retrieval"]["mean@10"]
    assert run_cli("eval", run, "--task-option", "data_sed=99") == 2
    err = capsys.readouterr().err
    assert "Did you mean 'data_seed'" in err and "Traceback" not in err


def test_unknown_generator_gives_suggestion_and_no_traceback(tmp_path, capsys):
    code = run_cli("train", "--task", "toy", "-n", "hard-minbatch", "--run-dir", tmp_path / "r")
    err = capsys.readouterr().err
    assert code != 0
    assert "did you mean 'hard-minibatch'" in err and "Traceback" not in err


def test_unknown_task_and_option_flag(tmp_path, capsys):
    assert run_cli("train", "--task", "tyo", "--run-dir", tmp_path / "r") != 0
    assert "Did you mean 'toy'" in capsys.readouterr().err
    assert run_cli("train", "--task", "toy", "--hard-minibatch-stratgy", "x") != 0
    assert "--hard-minibatch-strategy" in capsys.readouterr().err


def test_group_weights_flag_scales_the_group_and_checks_its_input(tmp_path, capsys):
    losses = {}
    for weights in ("1,1", "1,0"):
        run = tmp_path / weights.replace(",", "-")
        assert run_cli("train", "--task", "toy", "--profile", "small", "--steps", "1", "-n", "random",
                       "-n", "hard-minibatch", "--group-weights", weights, "--run-dir", run, "-q") == 0
        first = [m for m in read_metrics(run) if "loss" in m][0]
        losses[weights] = (first["loss"], first["group0/side0/loss"] + first["group0/side1/loss"])
    assert losses["1,0"][0] == pytest.approx(losses["1,0"][1])  # the second group weighs nothing
    assert losses["1,1"][0] > losses["1,0"][0]
    capsys.readouterr()
    assert run_cli("train", "--task", "toy", "--group-weights", "1,x", "--run-dir", tmp_path / "bad") == 2
    err = capsys.readouterr().err
    assert "--group-weights" in err and "Traceback" not in err


def test_group_weights_ramp_fades_a_group_in_and_resumes_mid_ramp(tmp_path, capsys):
    common = ["--task", "toy", "--profile", "small", "--steps", "12", "--checkpoint-every", "4", "--log-every", "1",
              "-n", "random", "-n", "hard-minibatch", "--group-weights", "1,0.5", "--seed", "2", "-q"]
    ramp = ["--group-weights-start", "1,0", "--group-weights-ramp", "8"]
    full = tmp_path / "full"
    assert run_cli("train", *common, *ramp, "--run-dir", full) == 0
    logged = [(m["step"], m["group1/weight"]) for m in read_metrics(full) if "loss" in m]
    assert logged == [(t + 1, min(t, 8) / 8 * 0.5) for t in range(12)]
    first = [m for m in read_metrics(full) if "loss" in m][0]  # step 1 weighs the second group 0
    assert first["loss"] == pytest.approx(first["group0/side0/loss"] + first["group0/side1/loss"])

    # a run cut at step 6 (checkpoint at 4) resumes to the same steps: the ramp follows step_in_stage
    stopper = tmp_path / "stopper.py"
    stopper.write_text(STOPPER.format(at=6, action="raise KeyboardInterrupt"))
    cut = tmp_path / "cut"
    assert run_cli("-p", stopper, "train", *common, *ramp, "--run-dir", cut) == 130
    assert run_cli("train", "--resume", cut, "-q") == 0
    assert ([(m["step"], m["loss"]) for m in read_metrics(cut) if "loss" in m]
            == [(m["step"], m["loss"]) for m in read_metrics(full) if "loss" in m])

    # a ramp from the weights to themselves is no ramp: the same losses, step for step
    flat, same = tmp_path / "flat", tmp_path / "same"
    assert run_cli("train", *common, "--run-dir", flat) == 0
    assert run_cli("train", *common, "--group-weights-start", "1,0.5", "--group-weights-ramp", "8",
                   "--run-dir", same) == 0
    assert ([m["loss"] for m in read_metrics(flat) if "loss" in m]
            == [m["loss"] for m in read_metrics(same) if "loss" in m])
    capsys.readouterr()
    assert run_cli("train", "--task", "toy", "--group-weights-ramp", "5", "--run-dir", tmp_path / "bad") == 2
    err = capsys.readouterr().err
    assert "group_weights_start" in err and "Traceback" not in err


def test_option_flag_changes_behaviour(tmp_path):
    counts = {}
    for k in (1, 3):
        run = tmp_path / f"k{k}"
        assert run_cli("train", "--task", "toy", "--profile", "small", "--steps", "10", "-n", "hard-minibatch",
                       "--hard-minibatch-k", k, "--run-dir", run, "-q") == 0
        last = [m for m in read_metrics(run) if "loss" in m][-1]
        counts[k] = last["hard-minibatch/side0/count"]
    assert counts[3] == 3 * counts[1]


def test_config_file_problems_all_reported(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('negatives = ["randm"]\nlr = -1\nbatch_sise = 3\n')
    assert run_cli("train", cfg, "--run-dir", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "'random'" in err and "'batch_size'" in err and "Traceback" not in err


STOPPER = """
from negmine import hookimpl

@hookimpl
def negmine_step_end(trainer, step, metrics):
    if step == {at}:
        {action}
"""


def test_resume_matches_uninterrupted_run(tmp_path, capsys):
    common = ["--task", "toy", "--profile", "small", "--steps", "30", "--checkpoint-every", "10", "-n", "random",
              "-n", "hard-minibatch", "--hard-minibatch-strategy", "sample", "--seed", "3", "-q"]
    full = tmp_path / "full"
    assert run_cli("train", *common, "--run-dir", full) == 0

    stopper = tmp_path / "stopper.py"
    stopper.write_text(STOPPER.format(at=25, action="raise KeyboardInterrupt"))
    cut = tmp_path / "cut"
    assert run_cli("-p", stopper, "train", *common, "--run-dir", cut) == 130
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 20
    assert run_cli("train", "--resume", cut, "-q") == 0

    a = [(m["step"], m["loss"]) for m in read_metrics(full) if "loss" in m]
    b = [(m["step"], m["loss"]) for m in read_metrics(cut) if "loss" in m]
    assert a == b and len(a) == 3
    wa = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert summary(full)["final"]["mean@5"] == summary(cut)["final"]["mean@5"]


def test_compare_with_warns_at_a_slow_start_against_finished_and_running_runs(tmp_path, capsys):
    common = ["--task", "toy", "--profile", "small", "--steps", "40", "--eval-every", "20", "-n", "random"]
    ref = tmp_path / "ref"
    assert run_cli("train", *common, "--lr", "0.01", "--run-dir", ref, "-q") == 0
    at_40 = summary(ref)["final"]["mean@10"]
    assert at_40 > 0.3  # the slow run below stays near chance (10 / 200), more than 20 points under it
    # a copy without summary.json reads as a run still training: its curve comes from metrics.jsonl
    running = tmp_path / "running"
    running.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (running / name).write_text((ref / name).read_text())
    capsys.readouterr()
    slow = tmp_path / "slow"
    assert run_cli("train", *common, "--lr", "1e-7", "--run-dir", slow, "--compare-with", ref,
                   "--compare-with", running, "-q") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[slow start]")]
    mine = summary(slow)["final"]["mean@10"]
    assert warnings == [f"[slow start] {slow}: validation R@10 {100 * mine:.1f} at step 40, "
                        f"{100 * (at_40 - mine):.1f} points below the median of runs {ref}, {running} at that step "
                        f"({100 * at_40:.1f}); a comparison with it will mostly measure this start"]
    # a run as good as the reference draws no warning
    assert run_cli("train", *common, "--lr", "0.01", "--run-dir", tmp_path / "same", "--compare-with", ref, "-q") == 0
    assert "[slow start]" not in capsys.readouterr().err


def test_compare_with_names_every_unusable_run_at_once(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "audio-clevrgan"}))
    early = tmp_path / "early"  # evaluated before training only
    early.mkdir()
    (early / "config.json").write_text(json.dumps({"task": "toy"}))
    (early / "metrics.jsonl").write_text(json.dumps({"event": "eval", "split": "val", "step": 0, "mean@10": 0.1})
                                         + "\n" + '{"event": "eval", "spl')  # a line cut short by a kill
    plain = tmp_path / "plain"
    plain.mkdir()
    code = run_cli("train", "--task", "toy", "--profile", "small", "--steps", "5", "--run-dir", tmp_path / "r",
                   "--compare-with", tmp_path / "missing", "--compare-with", other, "--compare-with", early,
                   "--compare-with", plain)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert f"{tmp_path / 'missing'}: no such directory" in err
    assert f"{other}: a run of task 'audio-clevrgan', not 'toy'" in err
    assert f"{early}: no validation evaluation after step 0 yet" in err
    assert f"{plain}: not a run directory (no config.json)" in err
    assert not (tmp_path / "r").exists()  # nothing trained


def test_run_validation_curve_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    from negmine.experiment import run_validation_curve

    lines = [{"event": "eval", "split": "val", "step": 0, "mean@10": 0.05},
             {"event": "eval", "split": "val", "step": 20, "mean@10": 0.2},
             {"event": "train", "step": 30, "loss": 1.0},
             {"event": "eval", "split": "test", "step": 40, "mean@10": 0.9},
             {"event": "eval", "split": "val", "step": 20, "mean@10": 0.3}]  # logged again after a resume
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert run_validation_curve(tmp_path) == {0: 0.05, 20: 0.3}
    (tmp_path / "summary.json").write_text(json.dumps({"initial": {"step": 0, "mean@10": 0.05},
                                                       "evaluations": [{"step": 20, "mean@10": 0.25}]}))
    assert run_validation_curve(tmp_path) == {0: 0.05, 20: 0.25}  # the finished run's summary wins
    assert run_validation_curve(tmp_path / "none") == {}


def test_resume_accepts_a_checkpoint_written_before_later_stage_keys(tmp_path, capsys):
    common = ["--task", "toy", "--profile", "small", "--steps", "30", "--checkpoint-every", "10", "-q"]
    stopper = tmp_path / "stopper.py"
    stopper.write_text(STOPPER.format(at=15, action="raise KeyboardInterrupt"))
    cut = tmp_path / "cut"
    assert run_cli("-p", stopper, "train", *common, "--run-dir", cut) == 130
    last = cut / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    config = json.loads(state["config"])
    for stage in config["stages"]:  # as written before stages had these keys
        del stage["group_weights"], stage["init_optimizer"], stage["group_weights_start"], stage["group_weights_ramp"]
    state["config"] = json.dumps(config)
    torch.save(state, last)
    capsys.readouterr()
    assert run_cli("train", "--resume", cut, "-q") == 0, capsys.readouterr().err
    assert summary(cut)["steps"] == 30


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    poison = tmp_path / "poison.py"
    poison.write_text(STOPPER.format(at=15, action=textwrap.dedent("""\
        import torch
                with torch.no_grad():
                    for p in trainer.model.parameters():
                        p.fill_(float('nan'))""")))
    run = tmp_path / "nan"
    code = run_cli("-p", poison, "train", "--task", "toy", "--profile", "small", "--steps", "30",
                   "--checkpoint-every", "10", "--run-dir", run, "-q")
    err = capsys.readouterr().err
    assert code == 2 and "loss became nan at step 16" in err and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nan_loss_before_the_first_checkpoint_says_that_none_was_written(tmp_path, capsys):
    """Issue 17, item 8: at step 1 there is no last.pt to name."""
    poison = tmp_path / "poison.py"
    poison.write_text(textwrap.dedent("""\
        import torch
        from negmine import hookimpl

        @hookimpl
        def negmine_stage_start(trainer):
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float('nan'))
        """))
    run = tmp_path / "nan1"
    code = run_cli("-p", poison, "train", "--task", "toy", "--profile", "small", "--steps", "30",
                   "--checkpoint-every", "10", "--run-dir", run, "-q")
    err = capsys.readouterr().err
    assert code == 2 and "loss became nan at step 1 " in err and "Traceback" not in err, err
    assert "No checkpoint was written yet (the first is due at step 10), so there is nothing to resume" in err
    assert "last.pt" not in err and not (run / "checkpoints" / "last.pt").exists()


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "r"
    args = ["train", "--task", "toy", "--profile", "small", "--steps", "5", "--run-dir", run, "-q"]
    assert run_cli(*args) == 0
    assert run_cli(*args) == 2
    assert "--resume" in capsys.readouterr().err


def test_curriculum_stages_and_init(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent("""
        task = "toy"
        profile = "small"
        [[stages]]
        name = "warm"
        steps = 20
        negatives = ["random"]
        [[stages]]
        name = "hard"
        steps = 20
        negatives = ["random", "hard-minibatch"]
    """))
    run = tmp_path / "stages"
    assert run_cli("train", cfg, "--run-dir", run, "-q") == 0
    assert (run / "checkpoints" / "stage-warm.pt").exists() and (run / "checkpoints" / "stage-hard.pt").exists()
    evals = [m for m in read_metrics(run) if m.get("event") == "eval"]
    assert [e["stage"] for e in evals] == ["warm", "warm", "hard"]
    stages = {m["stage"] for m in read_metrics(run) if "loss" in m}
    assert stages == {"warm", "hard"}
    # a new run initialised from the first run's warm stage
    cfg2 = tmp_path / "c2.toml"
    cfg2.write_text(textwrap.dedent(f"""
        task = "toy"
        profile = "small"
        [[stages]]
        name = "cont"
        steps = 5
        negatives = ["hard-minibatch"]
        init = "{run / 'checkpoints' / 'stage-warm.pt'}"
    """))
    run2 = tmp_path / "init"
    assert run_cli("train", cfg2, "--run-dir", run2, "-q") == 0
    # "before training" is measured on the warm-started weights: the warm stage's own final evaluation
    warm_final = [e for e in evals if e["stage"] == "warm"][-1]
    assert summary(run2)["initial"]["mean@5"] == warm_final["mean@5"]
    # the optimizer state: a finished run's last.pt has none (the error names the checkpoints that do), stage-*.pt has
    for name, code in (("last.pt", 2), ("stage-hard.pt", 0)):
        cfg2.write_text(textwrap.dedent(f"""
            task = "toy"
            profile = "small"
            optimizer = "adam"
            [[stages]]
            name = "cont"
            steps = 5
            negatives = ["hard-minibatch"]
            init = "{run / 'checkpoints' / name}"
            init_optimizer = true
        """))
        assert run_cli("train", cfg2, "--run-dir", tmp_path / f"opt-{name}", "-q") == code
    assert "a finished run's last.pt has none, its checkpoints/stage-NAME.pt" in capsys.readouterr().err
    # another optimizer's state is refused at the start, not at the first step
    cfg2.write_text(cfg2.read_text().replace('optimizer = "adam"', 'optimizer = "sgd"'))
    assert run_cli("train", cfg2, "--run-dir", tmp_path / "opt-sgd", "-q") == 2
    assert "does not fit this model or optimizer" in capsys.readouterr().err


def test_plugins_json_lists_generators_with_options(capsys):
    assert run_cli("plugins", "--json") == 0
    described = json.loads(capsys.readouterr().out)
    gens = {g["name"]: g for p in described for g in p["generators"]}
    assert {"random", "hard-minibatch", "faiss"} <= set(gens)
    opts = {o["name"]: o for o in gens["hard-minibatch"]["options"]}
    assert opts["strategy"]["choices"] == ["hardest", "semihard", "sample"] and opts["k"]["default"] == 1


LOCAL_GEN = """
import attrs
import torch
from negmine import NegativeGenerator, Negatives, hookimpl, option

class Easiest(NegativeGenerator):
    '''The easiest negatives (a test plugin).'''
    name = "easiest"

    @attrs.frozen
    class Options:
        k: int = option(1, "negatives per anchor", min=1)

    def mine(self, ctx):
        out = {}
        for side in (0, 1):
            s = ctx.scores[side].masked_fill(ctx.exclude, float("inf"))
            top = s.topk(self.options.k, dim=1, largest=False)
            out[side] = Negatives.from_batch(top.indices, top.values)
        return out

@hookimpl
def negmine_register_generators():
    return [Easiest]
"""


def test_local_plugin_file_is_listed_and_used(tmp_path, capsys):
    path = tmp_path / "easy.py"
    path.write_text(LOCAL_GEN)
    assert run_cli("-p", path, "plugins") == 0
    assert "easiest" in capsys.readouterr().out
    run = tmp_path / "r"
    assert run_cli("-p", path, "train", "--task", "toy", "--profile", "small", "--steps", "5", "-n", "easiest",
                   "--easiest-k", "2", "--run-dir", run, "-q") == 0
    last = [m for m in read_metrics(run) if "loss" in m][-1]
    assert last["easiest/side0/count"] == 2 * 32


def test_installed_third_party_generator_is_used(tmp_path):
    pytest.importorskip("negmine_example_generator")
    run = tmp_path / "mb"
    assert run_cli("train", "--task", "toy", "--profile", "small", "--steps", "20", "-n", "random", "-n",
                   "memory-bank", "--memory-bank-capacity", "64", "--run-dir", run, "-q") == 0
    last = [m for m in read_metrics(run) if "loss" in m][-1]
    assert last["memory-bank/side1/count"] == 32


NEEDS_GAN = """
import attrs
from negmine import NegativeGenerator, hookimpl

class Drawn(NegativeGenerator):
    '''Needs a GAN.'''
    name = "drawn"
    requires = frozenset({"gan"})

    def mine(self, ctx):
        return {}

@hookimpl
def negmine_register_generators():
    return [Drawn]
"""


def test_missing_capability_fails_at_start(tmp_path, capsys):
    path = tmp_path / "drawn.py"
    path.write_text(NEEDS_GAN)
    run = tmp_path / "r"
    code = run_cli("-p", path, "train", "--task", "toy", "--profile", "small", "-n", "drawn", "--run-dir", run)
    err = capsys.readouterr().err
    assert code == 2 and "needs gan from the task" in err and "Traceback" not in err
    assert not (run / "checkpoints").exists()  # nothing ran


class _Recorder:
    def __init__(self):
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)


def _bare_trainer(negatives=("random",), init_optimizer=False):
    """A Trainer with only what its watchers need: a recording reporter and one stage named 'main'."""
    from negmine.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.reporter = _Recorder()
    trainer._collapse_count, trainer._collapse_warned = 0, False
    trainer._dead_units_count, trainer._dead_units_warned = [0, 0], [False, False]
    from negmine.distributed import DistInfo

    stage = type("S", (), {"name": "main", "negatives": negatives, "init_optimizer": init_optimizer,
                           "combine": tuple((n,) for n in negatives)})()
    trainer.config = type("C", (), {"stages": [stage], "margin": 1.0})()
    trainer.stage_index = 0
    trainer.dist = DistInfo()  # one process
    return trainer


def test_collapse_warning():
    from negmine.trainer import COLLAPSE_PATIENCE

    trainer = _bare_trainer()
    metrics = {}
    for _ in range(COLLAPSE_PATIENCE - 1):
        trainer._watch_collapse(torch.full((8, 8), 0.3), metrics)
    assert not trainer.reporter.warnings
    trainer._watch_collapse(torch.full((8, 8), 0.3), metrics)
    assert len(trainer.reporter.warnings) == 1 and "collapsed" in trainer.reporter.warnings[0]
    trainer._watch_collapse(torch.randn(8, 8), metrics)
    assert trainer._collapse_count == 0 and metrics["score_std"] > 0.1


def test_collapse_advice_depends_on_the_negatives():
    from negmine.trainer import COLLAPSE_PATIENCE

    warnings = {}
    for negatives, init_optimizer in ((("random",), False), (("random", "hard-minibatch"), False),
                                      (("random", "hard-minibatch"), True)):
        trainer = _bare_trainer(negatives, init_optimizer)
        for _ in range(COLLAPSE_PATIENCE):
            trainer._watch_collapse(torch.full((8, 8), 0.3), {})
        warnings[negatives, init_optimizer] = trainer.reporter.warnings[0]
    assert "semihard" in warnings[("random", "hard-minibatch"), False]
    assert "semihard" not in warnings[("random",), False] and "plateau" in warnings[("random",), False]
    # a hard stage that continues its init's optimizer state is told about it first
    assert "init_optimizer = false" in warnings[("random", "hard-minibatch"), True]


def test_collapse_warning_counts_spreads_small_against_the_margin():
    from negmine.trainer import COLLAPSE_PATIENCE

    # scores that still differ a little (std ~0.02, as a collapsed Hard Neg run) but not on the margin's scale
    trainer = _bare_trainer()
    generator = torch.Generator().manual_seed(0)
    for _ in range(COLLAPSE_PATIENCE):
        trainer._watch_collapse(0.5 + 0.02 * torch.randn(8, 8, generator=generator), {})
    assert len(trainer.reporter.warnings) == 1
    # the same spread with a margin of 0.2 (e.g. cosine scores) is a working model
    trainer = _bare_trainer()
    trainer.config.margin = 0.2
    for _ in range(COLLAPSE_PATIENCE):
        trainer._watch_collapse(0.5 + 0.02 * torch.randn(8, 8, generator=generator), {})
    assert not trainer.reporter.warnings


def test_dead_units_warning():
    from negmine.model import Embedding
    from negmine.trainer import COLLAPSE_PATIENCE

    trainer = _bare_trainer()
    image = torch.zeros(8, 16, 4, 4)
    image[:, :3] = torch.rand(8, 3, 4, 4)  # 3 of 16 units alive, as after ReLUs died
    image[0, 3, 1, 2] = 1.0  # a fourth unit fires once, for one item at one position: it counts as live
    audio = torch.randn(8, 16, 10)
    metrics = {}
    for _ in range(COLLAPSE_PATIENCE):
        trainer._watch_dead_units((Embedding(image), Embedding(audio)), metrics)
    assert metrics["side0/live_units"] == 4 / 16 and metrics["side1/live_units"] == 1.0
    assert not trainer.reporter.warnings  # 25% is the limit, not below it
    image[0, 3, 1, 2] = 0.0
    for _ in range(COLLAPSE_PATIENCE):
        trainer._watch_dead_units((Embedding(image), Embedding(audio)), metrics)
    assert len(trainer.reporter.warnings) == 1 and "only 3 of the 16 units of side 0" in trainer.reporter.warnings[0]


MISSPELT = """
from negmine import NegativeGenerator, hookimpl

class Typo(NegativeGenerator):
    '''A generator whose lifecycle method has a misspelt hook name.'''
    name = "typo"

    def mine(self, ctx):
        return {}

    @hookimpl
    def negmine_step_ends(self, trainer, step, metrics):
        pass

@hookimpl
def negmine_register_generators():
    return [Typo]
"""


def test_misspelt_hook_method_on_a_generator_is_an_error(tmp_path, capsys):
    path = tmp_path / "typo.py"
    path.write_text(MISSPELT)
    code = run_cli("-p", path, "train", "--task", "toy", "--profile", "small", "-n", "typo", "--steps", "2",
                   "--run-dir", tmp_path / "r")
    err = capsys.readouterr().err
    assert code == 2 and "negmine_step_ends" in err and "Traceback" not in err


def test_flags_override_stage_generator_options(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent("""
        task = "toy"
        profile = "small"
        [[stages]]
        name = "only"
        steps = 3
        negatives = ["hard-minibatch"]
        [stages.generators.hard-minibatch]
        k = 2
    """))
    run = tmp_path / "r"
    assert run_cli("train", cfg, "--hard-minibatch-k", "3", "--run-dir", run, "-q") == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["stages"][0]["generators"]["hard-minibatch"]["k"] == 3
    assert run_cli("train", cfg, "--steps", "5", "--run-dir", tmp_path / "r2") == 2


def test_lr_schedule_warmup_decay_and_continued_start(tmp_path):
    """lr_at against the closed form: warm-up, step decay, and a first stage that continues a schedule at step 15."""
    from negmine.plugins import get_plugin_manager
    from negmine.trainer import Trainer
    from negmine_toy.task import build_toy

    def trainer(**cfg):
        return Trainer(build_toy("small", seed=0), {"steps": 5, "negatives": ["random"], "lr": 0.1, "lr_decay": 0.5,
                                                    "lr_decay_every": 10, "run_dir": str(tmp_path / str(len(cfg))),
                                                    **cfg}, plugins=get_plugin_manager(), reporter=None)

    plain = trainer()
    assert [plain.lr_at(s) for s in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    continued = trainer(lr_schedule_start=15)
    assert [continued.lr_at(s) for s in (0, 4, 5, 15)] == pytest.approx([0.05, 0.05, 0.025, 0.0125])
    warm = trainer(warmup_steps=4, lr_schedule_start=15)
    assert warm.lr_at(1) == pytest.approx(0.05) and warm.lr_at(4) == pytest.approx(0.05)
