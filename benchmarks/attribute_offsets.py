"""How much of the Table 1 protocol's raw score is a per-image offset, and what the offset follows.

For each run: every test image scored with every isolated attribute word (the protocol's scores); the std of an
image's mean score over the 15 words (the offset) against the mean per-word std of what is left (the word-specific
part), and the offset's correlation with the image's object count, object pixels and largest region norm::

    PYTHONPATH=examples python benchmarks/attribute_offsets.py runs/oracle-cpu/davenet--1-6-s-audio/seed-0 \
        runs/oracle-cpu/davenet/seed-0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from audio_clevrgan.evaluate import _encode_images, _spoken_word_encoder, word_scores  # noqa: E402
from negmine.evaluate import load_run  # noqa: E402
from negmine.plugins import get_plugin_manager  # noqa: E402


def main(runs: list[str]) -> None:
    pm = get_plugin_manager()
    cpu = torch.device("cpu")
    for run in runs:
        task, _, _ = load_run(pm, Path(run), "best")
        model = task.model.eval()
        root = Path(task.resources["data_dir"])
        rows = task.test.rows
        words = [json.loads(line) for line in (root / "semantic/words.jsonl").read_text().splitlines()]
        with torch.no_grad():
            images = _encode_images(model, [root / r["image"] for r in rows], cpu)
            scores = word_scores(model, images, words, _spoken_word_encoder(model, root, cpu, 0.0))  # [N, 15]
        offset = scores.mean(1).numpy()
        specific = (scores - scores.mean(1, keepdim=True)).std(0).mean()
        n_objects = np.array([len(r["objects"]) for r in rows])
        pixels = np.array([sum(o["pixels"] for o in r["objects"]) for r in rows])
        region_norm = images.values.flatten(2).norm(dim=1).amax(1).numpy()
        print(f"{run}: offset std {offset.std():.3f}; word-specific std {specific:.3f}; correlation of the offset "
              f"with #objects {np.corrcoef(offset, n_objects)[0, 1]:.2f}, object pixels "
              f"{np.corrcoef(offset, pixels)[0, 1]:.2f}, largest region norm {np.corrcoef(offset, region_norm)[0, 1]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
