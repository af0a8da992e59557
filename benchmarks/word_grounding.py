"""Where a DaveNet's attribute words fail: in the image tower, in the audio tower, or between them.

The attribute test (Table 1) says whether a spoken word scores images with its value above images without it. When
shape and material words stay at chance, three different causes look the same there:

1. the image tower does not encode the attribute: a linear probe on the image vector at an object's cell cannot
   tell its value (``image probe``; chance is the majority value);
2. the audio tower does not tell the words apart: the mean encoding of a word spoken in context is not nearest to
   its own word's mean over the other speakers (``audio words``, leave one speaker out);
3. both encode it but they are not aligned: the word of the object's value does not score the object's cell above
   the other values' words (``grounding``: the argmax over the attribute's words of the mean matchmap over the
   word's frames at the object's cell, averaged over speakers).

Objects are those the dataset's captions were written from (``objects`` of the manifest: shape, colour, material,
size and centre); the image probe is multinomial logistic regression (L-BFGS, weight decay 1e-3) fitted on objects
of the train split and read on objects of the test split::

    PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/word_grounding.py RUN_DIR [RUN_DIR ...] [--checkpoint best]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

from audio_clevrgan.evaluate import _encode_images, _spoken_context_encoder  # noqa: E402
from audio_clevrgan.vocab import ATTRIBUTES, VALUES  # noqa: E402
from negmine.evaluate import load_run  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402
from negmine.plugins import get_plugin_manager  # noqa: E402


def object_vectors(model, root: Path, rows: list[dict], device) -> tuple[torch.Tensor, list[dict]]:
    """The image tower's vector at each object's cell (Float[M, D]) and the objects, over ``rows``' images."""
    emb = _encode_images(model, [root / r["image"] for r in rows], device)
    values = emb.values  # [N, D, H, W]
    h, w = values.shape[-2:]
    vecs, objs = [], []
    for i, row in enumerate(rows):
        for o in row["objects"]:
            vecs.append(values[i, :, min(h - 1, int(o["y"] * h)), min(w - 1, int(o["x"] * w))])
            objs.append(o)
    return torch.stack(vecs).cpu(), objs


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, classes: int) -> torch.Tensor:
    """Predicted classes of ``x_test`` (Long[M]) by multinomial logistic regression fitted on the train rows."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xa, xb = (x_train - mu) / sd, (x_test - mu) / sd
    weight = torch.zeros(xa.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xa @ weight + bias, y_train) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (xb @ weight + bias).argmax(1)


def majority(y_train: torch.Tensor, y_test: torch.Tensor) -> float:
    return float((y_test == torch.bincount(y_train).argmax()).float().mean())


@torch.no_grad()
def word_encodings(model, root: Path, device, pad: float) -> dict[str, list[torch.Tensor]]:
    """Per attribute word, its in-context recordings' encodings cut to the word's frames: Float[D, T_i] each."""
    words = [json.loads(line) for line in (root / "semantic" / "words.jsonl").read_text().splitlines()]
    encode = _spoken_context_encoder(model, root, device, pad)
    emb = encode(words)
    out: dict[str, list[torch.Tensor]] = {}
    for k, entry in enumerate(words):
        out.setdefault(entry["word"], []).append(emb.values[k, :, : int(emb.lengths[k])].cpu())
    return out


def audio_word_accuracy(encodings: dict[str, list[torch.Tensor]], values: list[str]) -> float:
    """Leave-one-recording-out nearest-centroid accuracy of the attribute's words (mean-pooled encodings)."""
    pooled = {v: torch.stack([e.mean(1) for e in encodings[v]]) for v in values}
    hits = total = 0
    for v in values:
        for i in range(len(pooled[v])):
            best, best_d = None, None
            for u in values:
                others = pooled[u] if u != v else torch.cat([pooled[u][:i], pooled[u][i + 1:]])
                if len(others) == 0:
                    continue
                d = float((pooled[v][i] - others.mean(0)).norm())
                if best_d is None or d < best_d:
                    best, best_d = u, d
            hits += best == v
            total += 1
    return hits / max(1, total)


def grounding_accuracy(vectors: torch.Tensor, objects: list[dict], encodings: dict[str, list[torch.Tensor]],
                       attribute: str) -> float:
    """Share of objects whose own value's word scores their cell highest among the attribute's words (score: the
    mean over the word's frames of the dot product with the cell's vector, averaged over recordings)."""
    values = VALUES[attribute]
    # per value: [recordings, M] scores (mean over each recording's frames), averaged over recordings -> [M, V]
    scores = torch.stack([torch.stack([(vectors @ e).mean(1) for e in encodings[v]]).mean(0) for v in values], 1)
    truth = torch.tensor([values.index(o[attribute]) for o in objects])
    return float((scores.argmax(1) == truth).float().mean())


def only_by(rows: list[dict], attribute: str, pairs: int = 20000, seed: int = 0) -> float:
    """Share of random pairs of images (a positive and an in-batch impostor) whose objects differ, but would not if
    ``attribute`` were ignored: the pairs that only the attribute's words can tell apart."""
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(len(rows), (2, pairs), generator=g)
    rest = [a for a in ATTRIBUTES if a != attribute]

    def content(row, keys):
        return sorted(tuple(o[k] for k in keys) for o in row["objects"])

    hits = 0
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        ra, rb = rows[a], rows[b]
        hits += content(ra, ATTRIBUTES) != content(rb, ATTRIBUTES) and content(ra, rest) == content(rb, rest)
    return hits / pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--test-images", type=int, default=1000)
    a = ap.parse_args()
    torch.manual_seed(0)
    pm, device = get_plugin_manager(), torch.device("cpu")
    task0, _, _ = load_run(get_plugin_manager(), a.runs[0], a.checkpoint, "cpu")
    shares = {attr: only_by(task0.train.rows, attr) for attr in ATTRIBUTES}
    print("Random in-batch impostors that only an attribute's words tell apart from the positive (20,000 random pairs "
          "of training images; their objects compared as multisets): "
          + ", ".join(f"{attr} {100 * v:.2f}%" for attr, v in shares.items()) + ".\n")
    print("# Where attribute words fail: image tower, audio tower, or their alignment\n")
    print(f"`PYTHONPATH=examples OMP_NUM_THREADS=1 python benchmarks/word_grounding.py {' '.join(map(str, a.runs))} "
          f"--checkpoint {a.checkpoint}`; commit {machine_record()['commit']}, {platform.machine()}, torch {torch.__version__}. Image "
          f"probe: objects of the first {a.train_images} train images, read on those of the first {a.test_images} "
          "test images; grounding on the same test objects; all figures % (chance in brackets).\n")
    print("| run (step) | attribute | image probe | audio words (leave one out) | grounding: own word scores highest |")
    print("|---|---|---|---|---|")
    for run in a.runs:
        started = time.time()
        task, _, state = load_run(pm, run, a.checkpoint, "cpu")
        model = task.model.eval()
        root = Path(task.resources["data_dir"])
        pad = task.resources.get("audio_pad", 0.0)
        with torch.no_grad():
            x_train, o_train = object_vectors(model, root, task.train.rows[: a.train_images], device)
            x_test, o_test = object_vectors(model, root, task.test.rows[: a.test_images], device)
            encodings = word_encodings(model, root, device, pad)
        for attribute in ATTRIBUTES:
            values = VALUES[attribute]
            y_train = torch.tensor([values.index(o[attribute]) for o in o_train])
            y_test = torch.tensor([values.index(o[attribute]) for o in o_test])
            predicted = linear_probe(x_train, y_train, x_test, len(values))
            probe = float((predicted == y_test).float().mean())
            words = audio_word_accuracy(encodings, values)
            ground = grounding_accuracy(x_test, o_test, encodings, attribute)
            print(f"| {run} ({state.get('global_step')}) | {attribute} | {100 * probe:.1f} "
                  f"({100 * majority(y_train, y_test):.1f}) | {100 * words:.1f} ({100 / len(values):.1f}) | "
                  f"{100 * ground:.1f} ({100 * majority(y_train, y_test):.1f} majority, {100 / len(values):.1f} "
                  "uniform) |")
        print(f"<!-- {run}: {len(o_train)} train / {len(o_test)} test objects, {time.time() - started:.0f} s -->")


if __name__ == "__main__":
    main()
