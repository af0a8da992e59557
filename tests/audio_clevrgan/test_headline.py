"""The headline tables regenerate from the committed ledgers, and their paired differences are the per-seed ones."""

from audio_clevrgan import headline


def test_every_headline_row_reads_its_ledger_and_pairs_by_seed():
    gathered = headline.gather()
    assert list(gathered) == [row.label for row in headline.ROWS]
    text = headline.render(gathered)
    for label, g in gathered.items():
        if not g["seeds"]:  # a row whose runs are still to come says so in both tables
            assert text.count(f"| {label} | 0 | not run yet |") == 2, label
            continue
        assert 0.0 <= g["stats"]["attr:mean"]["mean"] <= 1.0
    assert gathered["DaveNet"]["seeds"] and gathered["Hard Neg"]["seeds"]
    # each seed against the DaveNet run it started from (its lineage): the current record or an earlier one
    from negmine.experiment import paired_difference

    d = paired_difference(gathered["Hard Neg"]["results"], "Hard Neg", "DaveNet", "attr:mean")
    assert f"{100 * d['mean']:+.1f}" in text.split("| Hard Neg |")[1].splitlines()[0]
    runs = gathered["Hard Neg"]["results"]["methods"]
    for seed, diff in d["per_seed"].items():
        wanted = runs["Hard Neg"]["lineage"][seed]["ancestors"].get("DaveNet")
        current = runs["DaveNet"]["lineage"][seed]["run"]
        base = runs["DaveNet"]["seeds"][seed] if wanted in (None, current) else runs["DaveNet"]["earlier"][seed][wanted]
        assert abs(diff - (runs["Hard Neg"]["seeds"][seed]["attr:mean"] - base["attr:mean"])) < 1e-12
    assert "*84.6*" in text and "*93.4*" in text  # the paper's HN+Targeted beside ours in both tables
    legend = headline.render_legend()  # the short labels name the experiment row each reads
    for row in headline.ROWS:
        assert f"- {row.label}: `{row.method}`" in legend and f"`{row.experiment}.toml`" in legend


def test_a_row_of_another_build_pairs_with_its_own_builds_baseline():
    from negmine.experiment import paired_difference

    method = ("Targeted Edits (task concepts, shapes only, checked on every caption, edit weight ramped 0 to 0.5 over "
              "400 steps)")
    rows = (headline.Row("DaveNet", headline.REDO, "DaveNet"),
            headline.Row("Targeted, third build", headline.BUILD3, method, "DaveNet", pair_with="DaveNet"))
    gathered = headline.gather(rows)
    line = headline.render(gathered).split("| Targeted, third build |")[1].splitlines()[0]
    own = paired_difference(gathered["Targeted, third build"]["results"], method, "DaveNet", "attr:mean")
    across = paired_difference({"methods": {"a": {"seeds": gathered["Targeted, third build"]["seeds"]},
                                            "b": {"seeds": gathered["DaveNet"]["seeds"]}}}, "a", "b", "attr:mean")
    assert f"{100 * own['mean']:+.1f} ± {100 * own['std']:.1f} (" in line and "vs DaveNet of its build" in line
    assert round(100 * own["mean"], 1) != round(100 * across["mean"], 1)  # the redo build's DaveNet would differ


def test_the_docs_hold_the_tables_the_ledgers_give():
    # a ledger record added without `python -m audio_clevrgan.headline --update docs/audio-clevrgan.md` fails here
    document = (headline.ROOT / "docs" / "audio-clevrgan.md").read_text()
    assert headline.embedded(document) == headline.headline_block()
    variants = headline.embedded(document, headline.VARIANTS_START, headline.VARIANTS_END)
    assert variants == headline.render(headline.gather(headline.VARIANTS))


def test_paired_blocks_pair_by_seed_and_the_results_files_hold_what_the_ledgers_give():
    text = headline.render_paired("oracle-cpu", "Oracle Edits (isolated words)", "DaveNet (isolated words)")
    row = next(line for line in text.splitlines() if line.startswith("| **Table 1 protocol"))
    base, ours, diff = (cell.strip() for cell in row.split("|")[2:5])
    ours_mean, base_mean, diff_mean = (float(cell.split()[0]) for cell in (ours, base, diff))
    assert abs(ours_mean - base_mean - diff_mean) <= 0.11  # each mean rounded to 0.1 on its own
    assert diff.endswith("ahead)")
    blocks = 0
    for path in sorted((headline.RESULTS).glob("*.md")):
        document = path.read_text()
        blocks += len(headline.PAIRED.findall(document))
        # a ledger record added without `python -m audio_clevrgan.headline --update <file>` fails here
        assert headline.update_paired(document) == document, path.name
    assert blocks >= 2


def test_a_paired_block_can_take_its_baseline_from_another_experiment():
    import json

    text = headline.render_paired("scene-iso-excl-cpu", "DaveNet", "scene-iso-cpu:DaveNet")
    row = next(line for line in text.splitlines() if line.startswith("| **Table 1 protocol"))
    per_seed = dict(part.split(": ") for part in row.split("|")[5].strip().split(", "))

    def table1(experiment, seed):
        path = headline.RESULTS / f"{experiment}-runs" / "davenet" / f"seed-{seed}" / "eval-test.json"
        return json.loads(path.read_text())["attributes"]["mean"]

    assert per_seed, row
    for seed, diff in per_seed.items():
        expected = 100 * (table1("scene-iso-excl-cpu", seed) - table1("scene-iso-cpu", seed))
        assert abs(float(diff) - expected) <= 0.051, (seed, diff, expected)


def test_a_words_block_lists_each_words_paired_auc_from_the_runs_evaluations():
    import json

    text = headline.render_paired("scene-iso05-excl-cpu", "Hard Neg", "DaveNet", words=True)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    ledger = headline.RESULTS / "scene-iso05-excl-cpu-runs"

    def auc(slug, seed, word):
        return json.loads((ledger / slug / f"seed-{seed}" / "eval-test.json").read_text())["attributes"]["per_word"][word]["auc"]

    # attribute by attribute in the metric rows' order, every word of the evaluation once
    assert [label.split(":")[0] for label in rows] == sorted((label.split(":")[0] for label in rows),
                                                            key=["shape", "material", "colour", "size"].index)
    words = json.loads((ledger / "davenet" / "seed-0" / "eval-test.json").read_text())["attributes"]["per_word"]
    assert sorted(label.split(": ")[1] for label in rows) == sorted(words)
    per_seed = dict(part.split(": ") for part in rows["shape: cube"].split("|")[5].strip().split(", "))
    assert len(per_seed) == 4
    for seed, diff in per_seed.items():  # Hard Neg's runs start from the DaveNet runs of the same seed
        assert abs(float(diff) - 100 * (auc("hard-neg", seed, "cube") - auc("davenet", seed, "cube"))) <= 0.051
    # the block form regenerates like the metric blocks
    block = "<!-- paired-words: scene-iso05-excl-cpu | Hard Neg | DaveNet -->\nstale\n<!-- paired: end -->"
    assert headline.update_paired(block) == block.replace("stale\n", text)


def test_a_paired_block_marks_seeds_whose_runs_trained_on_different_data(tmp_path):
    import json
    import shutil

    from negmine.experiment import MIXED_MARK, MIXED_NOTE

    experiments, results = tmp_path / "experiments", tmp_path / "results"
    shutil.copytree(headline.EXPERIMENTS, experiments)
    ledger = results / "scene-iso05-excl-cpu-runs"
    shutil.copytree(headline.RESULTS / "scene-iso05-excl-cpu-runs", ledger)
    # seed 0: the two runs name different builds; seed 1: the same build; the other seeds: no digest (older records)
    for slug, seed, digest in (("davenet", 0, "a" * 16), ("hard-neg", 0, "b" * 16), ("davenet", 1, "c" * 16),
                               ("hard-neg", 1, "c" * 16)):
        path = ledger / slug / f"seed-{seed}" / "provenance.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "data": digest}))
    text = headline.render_paired("scene-iso05-excl-cpu", "Hard Neg", "DaveNet", experiments, results)
    row = next(line for line in text.splitlines() if line.startswith("| **Table 1 protocol"))
    per_seed = dict(part.split(": ") for part in row.split("|")[5].strip().split(", "))
    assert per_seed["0"].endswith(MIXED_MARK) and not any(v.endswith(MIXED_MARK) for s, v in per_seed.items() if s != "0")
    assert text.rstrip().endswith(MIXED_NOTE)
    # the committed ledger, without digests, is not marked
    assert MIXED_MARK not in headline.render_paired("scene-iso05-excl-cpu", "Hard Neg", "DaveNet")


def test_a_pooled_block_pools_the_pairs_each_build_gives():
    method = "DaveNet"
    builds = ["scene-iso05-excl-cpu-redo", "scene-iso05-excl-cpu-build3"]
    # a method one build does not train (the third build's file does not keep it): the other build's pairs alone
    only_redo = "Oracle Edits (shape only, cube 2x, edit weight 0.5, from step 0)"
    pooled = headline.render_pooled(builds, only_redo, method)
    row = next(line for line in pooled.splitlines() if line.startswith("| **Table 1 protocol"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[2] == "–"  # only the redo build's pairs are pooled
    per_pair = dict(part.rsplit(": ", 1) for part in cells[4].split(", "))
    assert all(name.startswith("redo ") for name in per_pair)
    single = headline.render_paired(builds[0], only_redo, method)
    single_row = next(line for line in single.splitlines() if line.startswith("| **Table 1 protocol"))
    single_pairs = dict(part.split(": ") for part in single_row.split("|")[5].strip().split(", "))
    assert {f"redo {seed}": diff for seed, diff in single_pairs.items()} == per_pair
    assert cells[1] == cells[3].split("; SE")[0] + ")"  # one build: the pooled mean is that build's
    # two builds: every pair of each, and the pooled mean is the mean of the pairs
    target = "Targeted Edits (task concepts, shapes only, checked on every caption, edit weight ramped 0 to 0.5 over 400 steps)"
    pooled = headline.render_pooled(builds, target, method)
    row = next(line for line in pooled.splitlines() if line.startswith("| **Table 1 protocol"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    diffs = [float(part.rsplit(": ", 1)[1].rstrip("‡†")) for part in cells[4].split(", ")]
    ns = [int(cell.split("/")[1].split()[0]) for cell in cells[1:3]]
    assert len(diffs) == sum(ns) and any(p.startswith("build3 ") for p in cells[4].split(", "))
    # the pooled mean and each pair are printed to 0.1, so the mean of the printed pairs is within 0.05 + 0.05
    assert abs(float(cells[3].split()[0]) - sum(diffs) / len(diffs)) <= 0.1 + 1e-9
    block = f"<!-- pooled: {' + '.join(builds)} | {target} | {method} -->\nstale\n<!-- pooled: end -->"
    assert headline.update_paired(block) == block.replace("stale\n", pooled)
