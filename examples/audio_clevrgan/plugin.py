"""negmine plugin of the Audio CLEVRGAN reference example: the ``audio-clevrgan`` task and ``negmine data`` commands.

Only click and negmine's hook marker are imported here; torch and the example's modules load inside the hooks and
commands, so ``negmine --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from negmine import hookimpl

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


@hookimpl
def negmine_register_tasks():
    from negmine import TaskSpec

    from .task import OPTIONS, PROFILE_HELP, build_task

    profiles = {"cpu": PROFILE_HELP["cpu"], **{k: v for k, v in PROFILE_HELP.items() if k != "cpu"}}
    return [
        TaskSpec(
            name="audio-clevrgan",
            build=build_task,
            profiles=profiles,
            description="DaveNet (audio CNN vs VGG-style image CNN, MISA matchmaps) on spoken captions of "
            "CLEVR-like GAN images (Learning Words by Drawing Images).",
            options=OPTIONS,
        )
    ]


@click.group("data")
def data_group() -> None:
    """Build and prepare datasets of the installed tasks."""


@data_group.group("build")
def build_group() -> None:
    """Build a dataset on disk."""


@build_group.command("audio-clevrgan")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="dataset directory to create")
@click.option("--n", "n", required=True, type=click.IntRange(min=20), help="number of image-caption pairs")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--source", type=click.Choice(["gan", "rendered"]), default="gan", show_default=True,
              help="gan: GAN samples captioned from the segmenter (the paper); rendered: ground-truth renders")
@click.option("--gan", "gan_path", type=click.Path(dir_okay=False), default=str(CHECKPOINT_DIR / "generator.pt"),
              show_default=True)
@click.option("--segmenter", "segmenter_path", type=click.Path(dir_okay=False),
              default=str(CHECKPOINT_DIR / "segmenter.pt"), show_default=True)
@click.option("--image-size", type=click.Choice(["64", "128"]), default="64", show_default=True,
              help="rendered source only (a GAN has its own size)")
@click.option("--workers", default=min(2, os.cpu_count() or 1), show_default=True, type=click.IntRange(min=1),
              help="processes for speech synthesis")
@click.option("--full-captions", is_flag=True, help="longer caption templates (default: compact, shorter audio)")
def build_audio_clevrgan(out: str, n: int, seed: int, source: str, gan_path: str, segmenter_path: str,
                         image_size: str, workers: int, full_captions: bool) -> None:
    """Build Audio CLEVRGAN: images, spoken captions, the attribute-word and rendered-scene test sets.

    Deterministic from --seed; an interrupted build resumes when the same command runs again.
    """
    import time

    import torch

    from negmine.errors import DataError

    from .dataset import Builder, GanSource, RenderedSource, progress_printer

    torch.set_num_threads(1)  # determinism across machines with different core counts, and room for the workers
    if source == "gan":
        for label, path in (("GAN", gan_path), ("segmenter", segmenter_path)):
            if not Path(path).is_file():
                raise DataError(f"no {label} checkpoint at {path!r}; train one (`negmine data train-gan "
                                "audio-clevrgan`) or build from renders with --source rendered")
        image_source = GanSource(gan_path, segmenter_path)
    else:
        image_source = RenderedSource(int(image_size))
    started = time.perf_counter()
    Builder(out, n, seed, image_source, workers=workers, compact=not full_captions,
            progress=progress_printer(f"building {out}")).build()
    click.echo(f"dataset written to {out} ({n} pairs, source {source}) in {time.perf_counter() - started:.0f}s")


@hookimpl
def negmine_register_commands():
    return [data_group]
