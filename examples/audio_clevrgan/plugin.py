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


@hookimpl
def negmine_register_generators():
    from .oracle import GanSceneEdits, RenderedEdits

    return [RenderedEdits, GanSceneEdits]


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

    # a fixed thread count: the same floats on every run (and on machines with more cores); the speech workers run
    # after the GAN and segmenter of each chunk, so both phases use the two cores
    torch.set_num_threads(2)
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


def _training_options(fn):
    for option in reversed([
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="output directory; a run found there is resumed"),
        click.option("--steps", required=True, type=click.IntRange(min=1), help="total training steps"),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--device", default="cpu", show_default=True),
        click.option("--profile", default="cpu", show_default=True, help="model size / recipe (cpu, gpu, gpu-r1)"),
        click.option("--max-seconds", type=float, default=None, help="stop (with a checkpoint) after this long"),
        click.option("--ckpt-every", default=500, show_default=True, type=click.IntRange(min=1)),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
                     help="processes that sample scenes"),
        click.option("--threads", type=int, default=None, help="torch CPU threads"),
        click.option("--no-resume", is_flag=True, help="start afresh even if --out holds a run"),
    ]):
        fn = option(fn)
    return fn


@data_group.group("train-gan")
def train_gan_group() -> None:
    """Train a task's GAN."""


@train_gan_group.command("audio-clevrgan")
@_training_options
@click.option("--bank-size", default=20000, show_default=True, type=click.IntRange(min=64),
              help="rendered training scenes")
@click.option("--sample-every", default=1000, show_default=True, type=click.IntRange(min=1))
def train_gan_command(out, steps, seed, device, profile, max_seconds, ckpt_every, workers, threads, no_resume,
                      bank_size, sample_every) -> None:
    """Train the progressive-GAN-style generator on rendered scenes (resumable; writes generator.pt)."""
    from .train_scripts import train_gan

    result = train_gan(out, steps, seed=seed, device=device, resume=not no_resume, profile=profile,
                       bank_size=bank_size, max_seconds=max_seconds, ckpt_every=ckpt_every,
                       sample_every=sample_every, workers=workers, threads=threads)
    click.echo(f"GAN: {result}")


@data_group.group("train-segmenter")
def train_segmenter_group() -> None:
    """Train a task's attribute segmenter."""


@train_segmenter_group.command("audio-clevrgan")
@_training_options
@click.option("--fit-seconds", type=float, default=None, help="fit the learning-rate schedule to this duration")
def train_segmenter_command(out, steps, seed, device, profile, max_seconds, ckpt_every, workers, threads, no_resume,
                            fit_seconds) -> None:
    """Train the per-pixel attribute segmenter on rendered scenes (resumable; writes segmenter.pt)."""
    from .train_scripts import train_segmenter

    result = train_segmenter(out, steps, seed=seed, device=device, resume=not no_resume, profile=profile,
                             max_seconds=max_seconds, ckpt_every=ckpt_every, workers=workers, threads=threads,
                             fit_seconds=fit_seconds)
    click.echo(f"segmenter: {result}")


@data_group.group("quality")
def quality_group() -> None:
    """Measure a task's generative models."""


@quality_group.command("audio-clevrgan")
@click.option("--gan", "gan_path", default=str(CHECKPOINT_DIR / "generator.pt"), show_default=True)
@click.option("--segmenter", "segmenter_path", default=str(CHECKPOINT_DIR / "segmenter.pt"), show_default=True)
@click.option("--n", "n", default=1000, show_default=True, type=click.IntRange(min=10))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--sheet", type=click.Path(dir_okay=False), default=None, help="also write a PNG sheet")
@click.option("--device", default="cpu", show_default=True)
def quality_command(gan_path, segmenter_path, n, seed, sheet, device) -> None:
    """GAN quality read by the segmenter: confident objects and attribute frequencies vs rendered scenes."""
    from .quality import format_quality, gan_quality, make_sheet
    from .train_scripts import load_gan, load_segmenter

    gan, seg = load_gan(gan_path, device), load_segmenter(segmenter_path, device)
    click.echo(format_quality(gan_quality(gan, seg, n=n, seed=seed, device=device)))
    if sheet:
        make_sheet(gan, seg, sheet, device=device)


@hookimpl
def negmine_register_commands():
    return [data_group]
