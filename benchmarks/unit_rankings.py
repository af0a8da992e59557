"""Which GAN units ``gan-targeted`` would ablate for each of a model's concepts, read against the units' known roles.

On an attribute-factored generator (``cpu-scene-factored``) the roles of ``layer4``'s units are known by
construction: ``C - 10 U`` shared units draw every object's geometry, and ten groups of ``U`` units each draw one
attribute value (cube, cylinder, a colour but gray, metal). Zeroing one group in an object's cells changes exactly
that attribute (``edit_ceilings.py``: 90% of such edits read as one attribute of one object), while zeroing shared
units shrinks or erases the object. So a concept's ranking is good for one-attribute edits when its first units
all sit in one value group.

For one trained run this script computes the concepts of ``gan-targeted`` (the same clustering for every rule) and
dissects ``layer4`` against them under each unit threshold rule, then prints, per rule: per concept, the roles of
its top-``k`` units, and over concepts the share of top-``k`` units that are shared units and the share in the
concept's most frequent value group (its *purity*)::

    PYTHONPATH=examples:plugins OMP_NUM_THREADS=1 python benchmarks/unit_rankings.py runs/edits-main --clusters 0.17

No attribute label enters the concepts or the rankings: the roles are only used to read them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "plugins"))

import torch  # noqa: E402

from audio_clevrgan.scene_gan import factored_unit_roles  # noqa: E402
from negmine.evaluate import load_run  # noqa: E402
from negmine.experiment import machine_record  # noqa: E402
from negmine.plugins import get_plugin_manager  # noqa: E402
from negmine_gan.base import gan_to_input  # noqa: E402
from negmine_gan.concepts import compute_concepts, dissection_maps, rank_units  # noqa: E402
from negmine_gan.targeted import PAPER_CLUSTERS, GanTargetedEdits  # noqa: E402


def read_ranking(ranking: torch.Tensor, roles: list[str], k: int) -> tuple[list[str], float, float]:
    """Per concept the roles of its top-k units (most common first), and over concepts the mean share of shared
    units and the mean purity (share of the top-k in the concept's most frequent value group)."""
    lines, shared, purity = [], [], []
    for row in ranking[:, :k].tolist():
        counts = Counter(roles[u] for u in row)
        groups = [(n, r) for r, n in counts.items() if r != "shared"]
        shared.append(counts.get("shared", 0) / k)
        purity.append(max(groups)[0] / k if groups else 0.0)
        lines.append(", ".join(f"{r} {n}" for r, n in counts.most_common()))
    return lines, sum(shared) / len(shared), sum(purity) / len(purity)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--clusters", type=float, default=None, help="gan-targeted's clusters option (fraction of D)")
    ap.add_argument("--top", type=int, default=8, help="units read per concept (a value group has 8)")
    ap.add_argument("--task-option", action="append", default=[], help="KEY=VALUE override of the run's")
    a = ap.parse_args()
    torch.manual_seed(0)
    started = time.time()
    pm = get_plugin_manager()
    task, _, _ = load_run(pm, a.run_dir, a.checkpoint, "cpu", dict(kv.split("=", 1) for kv in a.task_option))
    gen = GanTargetedEdits(GanTargetedEdits.Options(), seed=0, task=task)
    editor, model = gen._editor(), task.model.eval()
    probe = task.train.batch(torch.arange(1))
    dim = int(model.encode(0, probe.a).values.shape[1])
    shared_args = dict(
        n_clusters=None if a.clusters is None else max(2, round(a.clusters * dim)),
        active_fraction=PAPER_CLUSTERS if a.clusters is None else None, max_datapoints=10000, n_dissect=1000,
        seed=0, device=torch.device("cpu"), latents=(task.resources or {}).get("sample_latents"))
    concepts = compute_concepts(model, task.train, editor, gan_to_input(task), unit_quantile=0.95, **shared_args)
    # the dissection's activations and segmentations again (the same latents), ranked under each rule
    acts, segs = dissection_maps(model, editor, gan_to_input(task), concepts.centroids, concepts.mu, concepts.sigma,
                                 n_dissect=1000, seed=0, device=torch.device("cpu"),
                                 z_dim=int(probe.extras["latent"].shape[1]), latents=shared_args["latents"])
    channels = acts.shape[1]
    units = int(getattr(getattr(editor.gan, "config", None), "g_factored", 0) or 0)
    if not units:
        sys.exit("the run's generator is not attribute-factored: its units have no known roles")
    roles = factored_unit_roles(channels, units)
    print("# GAN unit rankings of `gan-targeted` read against the factored generator's unit roles\n")
    print(f"run {a.run_dir} ({a.checkpoint}); {concepts.centroids.shape[0]} concepts of more than 3 units "
          f"({concepts.requested} requested, {concepts.active} embedding units fire); layer4 {channels} units: "
          f"{roles.count('shared')} shared, 10 value groups of {units}; top {a.top} per concept; commit {machine_record()['commit']}, "
          f"{platform.machine()}, torch {torch.__version__}, {time.time() - started:.0f} s\n")
    print("| unit threshold | shared units in the top (mean) | purity: top units in one value group (mean) |")
    print("|---|---|---|")
    tables = {}
    for label, quantile in (("quantile 0.95 (default)", 0.95), ("IQR (GAN Dissection's rule)", None)):
        ranking, _ = rank_units(acts, segs, quantile)
        lines, shared, purity = read_ranking(ranking, roles, a.top)
        tables[label] = lines
        print(f"| {label} | {100 * shared:.1f}% | {100 * purity:.1f}% |")
    for label, lines in tables.items():
        print(f"\n{label}, per concept:\n")
        for k, line in enumerate(lines):
            print(f"- concept {k}: {line}")


if __name__ == "__main__":
    main()
