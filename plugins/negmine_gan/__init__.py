"""Drawn negatives: GAN edits guided by the model's own matchmaps (``gan-random``, ``gan-targeted``; a task-agnostic GAN editing API)."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_gan.random_edit import GanRandomEdits
    from negmine_gan.targeted import GanTargetedEdits

    return [GanRandomEdits, GanTargetedEdits]


@hookimpl
def negmine_register_commands():
    import click

    @click.group("edits")
    def edits() -> None:
        """Inspect and export GAN-edited negatives."""

    @edits.command("export")
    @click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="directory to write")
    @click.option("--generator", default="gan-targeted", show_default=True, help="gan-random or gan-targeted")
    @click.option("--n", "n", default=100, show_default=True, type=click.IntRange(min=1), help="pairs to edit")
    @click.option("--split", default="test", type=click.Choice(["train", "val", "test"]), show_default=True)
    @click.option("--checkpoint", default="best", show_default=True)
    @click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="generator option over the run's (repeatable)")
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE",
                  help="override a task option of the run (repeatable), e.g. data_dir=... after moving the data")
    @click.pass_context
    def export(ctx, run_dir, out, generator, n, split, checkpoint, options, seed, device, task_options):
        """Edit held-out pairs with a trained run and write originals, edits, regions and provenance."""
        from pathlib import Path

        from negmine.cli import plugin_manager
        from negmine.config import parse_key_values
        from negmine_gan.export import export_edits

        opts = parse_key_values(options, "--option", dashes_to_underscores=True)
        summary = export_edits(plugin_manager(ctx), Path(run_dir), Path(out), generator, n, split, opts, checkpoint,
                               device, seed=seed, task_options=parse_key_values(task_options, "--task-option"))
        click.echo(f"{summary['count']} edits written to {out}; tries histogram {summary['tries_histogram']}")
        if "changed" in summary:
            click.echo(f"detected change: {100 * summary['changed']:.1f}% of edits; a single attribute of one "
                       f"object: {100 * summary['single_attribute']:.1f}%; by attribute "
                       f"{summary['changed_attributes']}")
        if "matched" in summary:
            click.echo(f"look-matched positives: {100 * summary['matched']:.1f}% of edits"
                       + (f"; the segmenter reads a change in {100 * summary['matched_changed']:.1f}% of them, by "
                          f"attribute {summary['matched_changed_attributes']}" if "matched_changed" in summary else ""))
        click.echo(f"mean absolute pixel change inside the region {summary['mean_change_inside']:.4f}, outside "
                   f"{summary['mean_change_outside']:.4f}; gallery: {Path(out) / summary['gallery']}")

    return [edits]
