"""The results' branch points: the parent's validation R@10 where its children start, slow-start seeds flagged."""

import json

from negmine.experiment import branch_points, collect, load_experiment, render_results

EXPERIMENT = """
task = "toy"
seeds = [0, 1, 2]

[[methods]]
name = "A"
negatives = ["random"]
steps = 20

[[methods]]
name = "B"
init = "A@10"
negatives = ["random", "hard-minibatch"]
steps = 10

[[methods]]
name = "C"
init = "A@10"
negatives = ["random"]
steps = 10
"""


def write_run(root, slug, seed, curve):
    run = root / slug / f"seed-{seed}"
    run.mkdir(parents=True)
    (run / "eval-test.json").write_text(json.dumps({"retrieval": {"mean@1": 0.1, "mean@5": 0.2, "mean@10": 0.3}}))
    evaluations = [{"split": "val", "step": s, "mean@10": v} for s, v in curve.items() if s]
    (run / "summary.json").write_text(json.dumps({"initial": {"step": 0, "mean@10": curve[0]},
                                                  "evaluations": evaluations}))


def test_slow_start_seed_is_flagged_against_the_median(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    for seed, at10 in [(0, 0.80), (1, 0.55), (2, 0.82)]:
        write_run(tmp_path / "out", "a", seed, {0: 0.02, 10: at10, 20: 0.9})
    results = collect(exp, tmp_path / "out")
    (point,) = branch_points(exp, results)
    assert point["parent"] == "A" and point["step"] == 10 and point["children"] == ["B", "C"]
    assert point["r10"] == {0: 0.80, 1: 0.55, 2: 0.82} and point["median"] == 0.80
    assert point["slow"] == [1]  # 25 points below the median
    # read back from results.json (string keys): the same
    assert branch_points(exp, json.loads(json.dumps(results))) == [point]
    write_run(tmp_path / "out2", "a", 0, {0: 0.02, 10: 0.80, 20: 0.9})
    write_run(tmp_path / "out2", "a", 1, {0: 0.02, 10: 0.61, 20: 0.9})  # 19 points below: not flagged
    write_run(tmp_path / "out2", "a", 2, {0: 0.02, 10: 0.82, 20: 0.9})
    assert branch_points(exp, collect(exp, tmp_path / "out2"))[0]["slow"] == []


def test_two_seeds_flag_the_lower_one_when_far_apart(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.replace("[0, 1, 2]", "[0, 1]"))
    exp = load_experiment(path)
    write_run(tmp_path / "out", "a", 0, {0: 0.02, 10: 0.862, 20: 0.9})
    write_run(tmp_path / "out", "a", 1, {0: 0.02, 10: 0.368, 20: 0.7})
    results = collect(exp, tmp_path / "out")
    assert branch_points(exp, results)[0]["slow"] == [1]
    text = render_results(exp, results)
    assert "| A@10 | B, C | 86.2 | **36.8** |" in text


def test_slow_starts_are_flagged_for_every_method_at_its_first_shared_evaluation(tmp_path):
    from negmine.experiment import slow_starts

    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    for seed, (at5, at10) in enumerate([(0.30, 0.80), (0.70, 0.85), (0.72, 0.83)]):
        write_run(tmp_path / "out", "a", seed, {0: 0.02, 5: at5, 10: at10, 20: 0.9})
    write_run(tmp_path / "out", "b", 0, {0: 0.8, 4: 0.5})  # B: seed 0 evaluated at 4, seed 1 not at all
    write_run(tmp_path / "out", "b", 1, {0: 0.8, 6: 0.9})
    write_run(tmp_path / "out", "c", 0, {0: 0.8, 5: 0.2, 10: 0.9})  # C: one seed only
    results = collect(exp, tmp_path / "out")
    (a,) = slow_starts(results)  # B's seeds share no evaluated step, C has one seed
    # step 5 is the first after step 0 that every seed of A evaluated; seed 0 is 40 points below the median 0.70
    assert a["method"] == "A" and a["step"] == 5 and a["median"] == 0.70 and a["slow"] == [0]
    assert slow_starts(json.loads(json.dumps(results))) == [a]  # read back from results.json
    text = render_results(exp, results)
    assert "| A | 5 | 70.0 | 0: 30.0 |" in text
    # a seed 15 points below is not a slow start, and the report then has no such table
    write_run(tmp_path / "out2", "a", 0, {0: 0.02, 5: 0.55, 20: 0.9})
    write_run(tmp_path / "out2", "a", 1, {0: 0.02, 5: 0.70, 20: 0.9})
    write_run(tmp_path / "out2", "a", 2, {0: 0.02, 5: 0.72, 20: 0.9})
    results = collect(exp, tmp_path / "out2")
    assert slow_starts(results)[0]["slow"] == [] and "Slow starts" not in render_results(exp, results)


def test_slow_start_watch_compares_each_validation_with_the_other_seeds_at_that_step():
    from negmine.experiment import SlowStartWatch

    lines = []
    watch = SlowStartWatch("A seed 1", {0: {400: 0.70, 800: 0.9}, 2: {400: 0.60}, 3: {800: 0.92}}, lines.append)
    watch.negmine_evaluate(None, "val", {"step": 400, "mean@10": 0.157})
    assert lines == ["[slow start] A seed 1: validation R@10 15.7 at step 400, 49.3 points below the median of seeds "
                     "0, 2 at that step (65.0); its paired differences will mostly measure this start (the report "
                     "lists it under slow starts)"]
    watch.negmine_evaluate(None, "val", {"step": 800, "mean@10": 0.75})  # 16 points below: not slow
    watch.negmine_evaluate(None, "test", {"step": 400, "mean@10": 0.0})  # not a validation
    watch.negmine_evaluate(None, "val", {"step": 1200, "mean@10": 0.0})  # no other seed evaluated there
    assert len(lines) == 1
