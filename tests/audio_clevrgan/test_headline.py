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
    ours, base = gathered["Hard Neg"]["seeds"], gathered["DaveNet"]["seeds"]
    diffs = [ours[s]["attr:mean"] - base[s]["attr:mean"] for s in ours if s in base]
    assert f"{100 * sum(diffs) / len(diffs):+.1f}" in text.split("| Hard Neg |")[1].splitlines()[0]
    assert "*84.6*" in text and "*93.4*" in text  # the paper's HN+Targeted beside ours in both tables


def test_the_docs_hold_the_tables_the_ledgers_give():
    # a ledger record added without `python -m audio_clevrgan.headline --update docs/audio-clevrgan.md` fails here
    document = (headline.ROOT / "docs" / "audio-clevrgan.md").read_text()
    assert headline.embedded(document) == headline.render(headline.gather())
