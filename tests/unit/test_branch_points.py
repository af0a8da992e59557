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
