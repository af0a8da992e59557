"""Figures of a trained DaveNet: retrieval examples (paper fig. 7 style), word heat maps, training curves."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import load_image


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Loss and validation mean R@1/5/10 against steps for one or more runs (from metrics.jsonl)."""
    plt = _plt()
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    for i, run in enumerate(run_dirs):
        label = labels[i] if labels else Path(run).name
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line]
        steps = [r["step"] for r in rows if "loss" in r]
        ax_loss.plot(steps, [r["loss"] for r in rows if "loss" in r], label=label, lw=1)
        evals = [r for r in rows if r.get("event") == "eval"]
        for k, style in (("mean@10", "-"), ("mean@5", "--"), ("mean@1", ":")):
            ax_rec.plot([r["step"] for r in evals], [100 * r[k] for r in evals], style,
                        label=f"{label} {k.replace('mean@', 'R@')}", color=f"C{i}")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_rec.set(xlabel="step", ylabel="recall (%)", title="validation recall (mean of both directions)")
    ax_loss.legend(fontsize=7)
    ax_rec.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@torch.no_grad()
def retrieval_examples(model: Any, task: Any, out: Path, n_queries: int = 4, top: int = 5, n_pool: int = 500,
                       device: torch.device | str = "cpu") -> Path:
    """For a few test captions: the caption text and the top images retrieved from the test pool (the true image
    framed in green, others in grey)."""
    plt = _plt()
    model.eval()
    data = task.test
    n = min(n_pool, len(data))
    ids = torch.arange(n)
    batch = data.batch(ids)
    img = model.encode(0, batch.a.to(device))
    aud = model.encode(1, tuple(x.to(device) for x in batch.b))
    scores = torch.cat([model.score_matrix(img, aud[slice(i, i + 64)]) for i in range(0, n, 64)], dim=1).cpu()
    fig, axes = plt.subplots(n_queries, top + 1, figsize=(2.0 * (top + 1), 2.1 * n_queries))
    root = Path(task.resources["data_dir"])
    for q in range(n_queries):
        ranking = scores[:, q].argsort(descending=True)[:top].tolist()
        ax = axes[q, 0]
        ax.axis("off")
        ax.text(0, 0.5, "\n".join(textwrap.wrap(data.rows[q]["caption"], 28)), fontsize=6.5, va="center")
        for j, idx in enumerate(ranking):
            ax = axes[q, j + 1]
            ax.imshow(load_image(root / data.rows[idx]["image"]))
            ax.set_xticks([])
            ax.set_yticks([])
            color = "limegreen" if idx == q else "0.6"
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3 if idx == q else 1)
            ax.set_title(f"#{j + 1}  {float(scores[idx, q]):.2f}", fontsize=7)
    fig.suptitle(f"spoken caption -> top {top} of {n} test images (true image in green)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    model.train()
    return out


@torch.no_grad()
def word_heatmaps(model: Any, task: Any, out: Path, words: tuple[str, ...] = ("cube", "sphere", "metal", "red",
                  "large"), n_images: int = 4, device: torch.device | str = "cpu") -> Path:
    """Where in the image each isolated spoken word matches: max over time of the matchmap, upsampled over images
    that contain the word's attribute value."""
    from .evaluate import _encode_audio

    plt = _plt()
    model.eval()
    root = Path(task.resources["data_dir"])
    entries = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
    rows = task.test.rows
    fig, axes = plt.subplots(len(words), n_images, figsize=(2.0 * n_images, 2.1 * len(words)))
    for w, word in enumerate(words):
        entry = next(e for e in entries if e["word"] == word)
        with_value = [r for r in rows if r["pixels"][entry["value"]] > 0][:n_images]
        audio = _encode_audio(model, [root / entry["audio"]], device, task.resources.get("audio_pad", 0.0))
        for k in range(n_images):
            ax = axes[w, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(with_value):
                continue
            image = load_image(root / with_value[k]["image"])
            emb = model.encode(0, torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(device))
            mm = model.score.matchmap(emb, audio)[0]  # [8, 8, T']
            heat = mm[..., : int(audio.lengths[0])].amax(-1).cpu().numpy()
            heat = (heat - heat.min()) / (np.ptp(heat) + 1e-8)
            size = image.shape[0]
            ax.imshow(image)
            ax.imshow(np.kron(heat, np.ones((size // 8, size // 8))), cmap="jet", alpha=0.45)
            if k == 0:
                ax.set_ylabel(f'"{word}"', fontsize=9)
    fig.suptitle("matchmap of an isolated spoken word (max over time), over test images with that attribute",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    model.train()
    return out


@torch.no_grad()
def word_learning(models: list[tuple[str, Any]], task: Any, out: Path,
                  words: tuple[str, ...] = ("cube", "cylinder", "metal", "red"), n_images: int = 3,
                  context: bool = True, device: torch.device | str = "cpu") -> Path:
    """Is a word learned? For each word, each model's matchmap of the spoken word (max over its frames) over test
    images *with* the word's attribute value (left) and *without* it (right), one heat scale per word and model so
    that the two halves compare; under each tile the word's MISA score on that image. A grounded word lights its
    object on the left and scores higher there than on the right (the paper's figures 5 and 7 in spirit).

    models: (label, model) pairs of the same task, e.g. DaveNet and the best edit row. context: the word spoken
    after "there is a" and scored on its own frames (as the in-context attribute test), else the isolated word.
    Images: the same ``n_images`` per side for every model, chosen as the attribute test chooses them (pixel
    thresholds of :func:`audio_clevrgan.evaluate.pixel_thresholds`)."""
    from .evaluate import _spoken_context_encoder, _spoken_word_encoder, pixel_thresholds

    plt = _plt()
    root = Path(task.resources["data_dir"])
    pad = task.resources.get("audio_pad", 0.0)
    entries = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
    rows = task.test.rows
    size = int(task.resources["meta"]["image_size"])
    thresholds = pixel_thresholds(size)
    n_cols = 2 * n_images
    fig, axes = plt.subplots(len(words) * len(models), n_cols, squeeze=False,
                             figsize=(1.7 * n_cols, 1.9 * len(words) * len(models)))
    for w, word in enumerate(words):
        entry = next(e for e in entries if e["word"] == word)
        lo, hi, neg_max = thresholds[entry["attribute"]]
        with_value = [r for r in rows if lo < r["pixels"][entry["value"]] < hi][:n_images]
        without = [r for r in rows if r["pixels"][entry["value"]] < neg_max][:n_images]
        chosen = with_value + without
        images = torch.from_numpy(np.stack([load_image(root / r["image"]) for r in chosen])).permute(0, 3, 1, 2)
        for m, (label, model) in enumerate(models):
            model.eval()
            encode = (_spoken_context_encoder if context else _spoken_word_encoder)(model, root, device, pad)
            audio = encode([entry])
            emb = model.encode(0, images.to(device))
            seq = audio[torch.zeros(len(chosen), dtype=torch.long, device=audio.values.device)]
            mm = model.score.matchmap(emb, seq)[..., : int(audio.lengths[0])]  # [N, 8, 8, T']
            heat = mm.amax(-1).cpu().numpy()
            scores = model.score_pairs(emb, seq).cpu().numpy()
            lo_h, hi_h = heat.min(), heat.max()
            grid = heat.shape[1]
            for k in range(n_cols):
                ax = axes[w * len(models) + m, k]
                ax.set_xticks([])
                ax.set_yticks([])
                if k >= len(chosen):
                    continue
                ax.imshow(images[k].permute(1, 2, 0).numpy())
                h = (heat[k] - lo_h) / (hi_h - lo_h + 1e-8)
                ax.imshow(np.kron(h, np.ones((size // grid, size // grid))), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax.set_xlabel(f"{'with' if k < len(with_value) else 'without'}  {scores[k]:.2f}", fontsize=7)
                if k == 0:
                    ax.set_ylabel(f'"{word}"\n{label}', fontsize=8)
            model.train()
    how = 'after "there is a", on its own frames' if context else "isolated"
    fig.suptitle(f"matchmap of the spoken word ({how}; max over its frames): images with the attribute (left) "
                 "and without (right); score under each", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m audio_clevrgan.figures words --run LABEL=RUN_DIR ... --out fig.png``: the word-learning figure."""
    import argparse

    from negmine.evaluate import load_run
    from negmine.plugins import get_plugin_manager

    p = argparse.ArgumentParser(description="figures of trained Audio CLEVRGAN runs")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("words", help=word_learning.__doc__.split("\n")[0])
    w.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeat; rows in this order)")
    w.add_argument("--out", required=True, type=Path)
    w.add_argument("--words", nargs="+", default=["cube", "cylinder", "metal", "red"])
    w.add_argument("--n-images", type=int, default=3)
    w.add_argument("--isolated", action="store_true", help="the isolated word instead of the word in context")
    w.add_argument("--checkpoint", default="best")
    a = p.parse_args(argv)
    pm = get_plugin_manager()
    models, task = [], None
    for spec in a.run:
        label, _, run = spec.rpartition("=")
        task_i, _, _ = load_run(pm, Path(run), a.checkpoint)
        task = task or task_i
        models.append((label or Path(run).parent.name, task_i.model))
    word_learning(models, task, a.out, tuple(a.words), a.n_images, context=not a.isolated)
    print(a.out)
    return 0


def figures(model: Any, task: Any, run_dir: Path, device: torch.device, split: str = "test") -> dict[str, Any]:
    """The ``figures`` evaluation of ``negmine eval``: writes PNGs into the run directory."""
    paths = {
        "retrieval": retrieval_examples(model, task, run_dir / "fig-retrieval.png", device=device),
        "heatmaps": word_heatmaps(model, task, run_dir / "fig-word-heatmaps.png", device=device),
    }
    # A run directory copied without its training log (a checkpoint evaluated elsewhere) still gets the model's
    # figures; only the curves need the log.
    if (run_dir / "metrics.jsonl").is_file():
        paths["curves"] = training_curves([run_dir], run_dir / "fig-training.png")
    md = "\n".join(f"![{name}]({p.name})" for name, p in paths.items())
    return {"files": {k: str(v) for k, v in paths.items()}, "markdown": md}


if __name__ == "__main__":
    raise SystemExit(main())
