"""Concepts from the model itself, and which GAN units draw them (paper §5.5-5.6; PAPER-NOTES §2.5 A-C).

1. Datapoints: for training pairs, d = A[:, t*] * I[:, h*, w*] (Float[D]) at the matchmap's 3-D argmax.
2. Units of the embedding are binarised per unit at their 99th percentile; unit-unit Jaccard co-activation;
   average-linkage agglomerative clustering (scipy, cut at exactly K clusters) of the units that ever fire; clusters
   of more than 3 units kept, each a centroid c_k = 1[units of k] / |k|.
3. Dissection: the cluster segmentation s_k(I) = c_k . (F - mu) / sigma > 0.5 on the model's image map F of GAN
   images, against every GAN unit's binarised activation of the edited layer; units are ranked per cluster by IoU.

With a task's segmentation instead (``gan-targeted``'s ``concepts = "task"``; :func:`compute_task_concepts`), the
concepts are the task's named ones and units are ranked per concept by :func:`specificity` (the paper's own §4 edits
and GAN Dissection's, with a segmenter).

The model's image map and the GAN layer share one grid (8x8 for DaveNet and the Audio CLEVRGAN generator), so the
dissection runs on that grid directly (the paper upsamples both to pixels first; on a shared grid the ranking is the
same up to interpolation).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from negmine.errors import PluginError
from negmine.model import Embedding


def peak_datapoints(model: Any, image: Embedding, audio: Embedding) -> tuple[Tensor, Tensor, Tensor]:
    """Per pair: d = A[:, t*] * I[:, h*, w*] (Float[B, D]), the image vector there (Float[B, D]) and (h*, w*)."""
    mm = model.score.matchmap(image, audio)  # [B, H, W, T]
    b, h, w, t = mm.shape
    if audio.lengths is not None:
        valid = torch.arange(t, device=mm.device)[None, :] < audio.lengths[:, None]
        mm = mm.masked_fill(~valid[:, None, None, :], float("-inf"))
    flat = mm.flatten(1).argmax(1)
    hw, ts = flat // t, flat % t
    hs, ws = hw // w, hw % w
    rows = torch.arange(b, device=mm.device)
    img_vec = image.values[rows, :, hs, ws]  # [B, D]
    aud_vec = audio.values[rows, :, ts]  # [B, D]
    return aud_vec * img_vec, img_vec, torch.stack([hs, ws], 1)


def jaccard(binary: Tensor) -> Tensor:
    """Float[U, U] co-activation Jaccard of the columns of Bool[N, U] (diagonal set to 0)."""
    x = binary.float()
    inter = x.T @ x
    counts = x.sum(0)
    union = counts[:, None] + counts[None, :] - inter
    j = inter / (union + 1e-10)
    j.fill_diagonal_(0)
    return j


def cluster_units(datapoints: Tensor, n_clusters: int | None, quantile: float = 0.99, min_size: int = 4,
                  active_fraction: float | None = None, stats: dict | None = None) -> Tensor:
    """Centroids Float[K', D] (rows sum to 1) of the unit clusters with at least ``min_size`` units.

    datapoints: Float[N, D]. Units are binarised at their ``quantile``, compared by Jaccard distance and clustered
    with average linkage into exactly ``n_clusters`` (fewer when fewer units ever fire), like the reference's
    agglomerative clustering: the tree is cut after a number of merges, not at a distance. A cut at a distance
    (scipy's ``fcluster(..., "maxclust")``) cannot separate ties, and units that never fire together are all at
    distance 1 from each other, so it returned one cluster of every unit on a model with sparse datapoints. Units
    that never pass their threshold are left out: they co-activate with nothing, and would only be merged by tie
    order into clusters of silent units. With ``n_clusters`` None, K = max(2, round(``active_fraction`` x the units
    that fire)). ``stats``, when given, receives ``requested`` (K) and ``active`` (the units that fire).
    """
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    d = datapoints.float().cpu()
    thresholds = torch.quantile(d, quantile, dim=0) + 1e-7
    binary = d > thresholds
    active = binary.any(0).nonzero().flatten()
    if n_clusters is None:
        n_clusters = max(2, round(float(active_fraction or 0.0) * active.numel()))
    if stats is not None:
        stats.update(requested=int(n_clusters), active=int(active.numel()))
    centroids = []
    if active.numel() >= 2:
        dist = (1 - jaccard(binary[:, active])).clamp_min(0).numpy().astype(np.float64)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        labels = cut_tree(tree, n_clusters=min(n_clusters, active.numel())).flatten()
        for k in np.unique(labels):
            members = active[torch.from_numpy(labels == k)]
            if members.numel() >= min_size:
                c = torch.zeros(d.shape[1])
                c[members] = 1.0 / members.numel()
                centroids.append(c)
    if not centroids:  # degenerate (e.g. an untrained model): one cluster of every unit
        centroids.append(torch.full((d.shape[1],), 1.0 / d.shape[1]))
    return torch.stack(centroids)


def cluster_segmentation(features: Tensor, centroids: Tensor, mu: Tensor, sigma: Tensor, threshold: float = 0.5) -> Tensor:
    """Bool[B, K, H, W]: where each cluster is present. features: Float[B, D, H, W]; centroids Float[K, D]."""
    normed = (features - mu[None, :, None, None]) / (sigma[None, :, None, None] + 1e-8)
    scores = torch.einsum("kd,bdhw->bkhw", centroids.to(features), normed)
    return scores > threshold


def _entropy(*probs: Tensor) -> Tensor:
    """Entropy (nats) of a distribution given as tensors of its cell probabilities (same shape each)."""
    total = torch.zeros_like(probs[0])
    for p in probs:
        total -= torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros_like(p))
    return total


def iqr_thresholds(acts: Tensor, seg: Tensor, levels: int = 100) -> tuple[Tensor, Tensor]:
    """Per unit, the activation threshold that best predicts one concept: GAN Dissection's ``'iqr'`` rule, its
    default for generators (PAPER-NOTES §2.3).

    acts: Float[C, P] each unit's activations over P positions; seg: Bool[K, P] each concept's mask. A unit's
    candidate thresholds are its (1 - f) quantiles for f in logspace(-3, 0, ``levels``) (f = 1, every position on,
    excluded); for each (concept, threshold) the information quality ratio IQR = I(on; c) / H(on, c) of the 2x2
    joint distribution of "unit on" and "concept present" is computed, set to 0 where the two agree on at most 80%
    of positions or the concept covers under 0.1% of them. The unit's threshold is the one of its best (concept,
    threshold). Returns (thresholds Float[C], best IQR Float[C]).

    Why not one quantile for every unit: a unit that draws every object (geometry) and a unit that draws only cyan
    objects fire on very different shares of the map; a fixed top 5% cuts the first to the few largest objects and
    makes it look as specific as the second. Under the IQR rule each unit's mask is what it draws, so the IoU
    ranking puts the units that draw a concept, not the ones that draw every object strongly, first.
    """
    c, p = acts.shape
    seg = seg.float()
    p_c = seg.mean(1)  # [K]
    fractions = torch.logspace(-3, 0, levels, dtype=torch.float64)[:-1]  # f = 1 excluded
    counts = (fractions * p).round().long().clamp(1, p)  # positions on at each level
    p_on = counts.double() / p  # [L]
    thresholds, best = torch.empty(c), torch.empty(c)
    for u in range(c):
        values, order = acts[u].sort(descending=True)
        inter = seg[:, order].double().cumsum(1)[:, counts - 1] / p  # [K, L] P(on and c)
        on_c = inter
        on_not = p_on[None, :] - on_c
        off_c = p_c.double()[:, None] - on_c
        off_not = 1 - on_c - on_not - off_c
        joint = _entropy(on_c, on_not, off_c, off_not)
        h_on = _entropy(p_on[None, :].expand_as(on_c), 1 - p_on[None, :].expand_as(on_c))
        h_c = _entropy(p_c.double()[:, None].expand_as(on_c), 1 - p_c.double()[:, None].expand_as(on_c))
        iqr = (h_on + h_c - joint) / joint.clamp_min(1e-30)
        iqr[(on_c + off_not) <= 0.8] = 0
        iqr[p_c < 1e-3] = 0
        flat = int(iqr.flatten().argmax())
        level = flat % iqr.shape[1]
        # the threshold sits between the last position on and the first off, so ties at the cut stay off
        k = int(counts[level])
        thresholds[u] = values[k - 1] if k == p else (values[k - 1] + values[k]) / 2
        best[u] = float(iqr.flatten()[flat])
    return thresholds, best


def unit_ious(unit_acts: Tensor, segmentation: Tensor, quantile: float | None = 0.95) -> tuple[Tensor, Tensor]:
    """(iou Float[K, C], thresholds Float[C]): every GAN unit's binarised activation against every concept.

    unit_acts: Float[N, C, H, W] the GAN layer's outputs; segmentation: Bool[N, K, H, W] on the same grid. A unit is
    "on" above its own ``quantile`` over all images and positions, or, with ``quantile`` None, above the threshold
    of GAN Dissection's IQR rule (:func:`iqr_thresholds`).
    """
    n, c, h, w = unit_acts.shape
    acts = unit_acts.permute(1, 0, 2, 3).reshape(c, -1).float()  # [C, N*H*W]
    seg = segmentation.permute(1, 0, 2, 3).reshape(segmentation.shape[1], -1).float()  # [K, P]
    if quantile is None:
        thresholds, _ = iqr_thresholds(acts, seg > 0)
    elif acts.shape[1] <= 16_000_000:
        thresholds = torch.quantile(acts, quantile, dim=1)
    else:
        thresholds = acts.kthvalue(int(quantile * acts.shape[1]), dim=1).values
    on = (acts > thresholds[:, None]).float()  # [C, P]
    inter = seg @ on.T  # [K, C]
    union = seg.sum(1, keepdim=True) + on.sum(1)[None, :] - inter
    return inter / (union + 1e-20), thresholds


def rank_units(unit_acts: Tensor, segmentation: Tensor, quantile: float | None = 0.95) -> tuple[Tensor, Tensor]:
    """Per cluster, GAN units by descending IoU with the cluster's segmentation (arguments as :func:`unit_ious`).

    Returns (ranking Long[K, C], iou Float[K, C]).
    """
    iou, _ = unit_ious(unit_acts, segmentation, quantile)
    return iou.argsort(dim=1, descending=True), iou


def specificity(iou: Tensor) -> Tensor:
    """Float[K, C]: a unit's IoU with concept k minus its highest IoU with any other concept (K >= 2).

    Why not IoU alone: a unit that draws every object (geometry) overlaps every object concept, often more than the
    units of one value do; ranked by IoU, "large" or "rubber" pick such units, and ablating them removes or shrinks
    the object instead of changing one attribute. A unit specific to a concept overlaps it and nothing else."""
    k = iou.shape[0]
    if k < 2:
        return iou.clone()
    top2 = iou.topk(2, dim=0).values  # [2, C]: the best and second-best concept of every unit
    best_other = torch.where(iou >= top2[0:1], top2[1:2].expand_as(iou), top2[0:1].expand_as(iou))
    return iou - best_other


@attrs.define
class Concepts:
    """The state the targeted generator keeps between reclusterings (tensors only, checkpointable)."""

    centroids: Tensor  # Float[K, D]
    mu: Tensor  # Float[D]
    sigma: Tensor  # Float[D]
    ranking: Tensor  # Long[K, C]
    iou: Tensor  # Float[K, C]
    step: int = 0
    requested: int = 0  # clusters asked of the clustering (K before clusters of <= 3 units are dropped)
    active: int = 0  # embedding units that fired at the matchmap peaks

    def state(self) -> dict[str, Any]:
        return {"centroids": self.centroids, "mu": self.mu, "sigma": self.sigma, "ranking": self.ranking,
                "iou": self.iou, "step": self.step, "requested": self.requested, "active": self.active}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Concepts:
        return cls(s["centroids"], s["mu"], s["sigma"], s["ranking"], s["iou"], int(s["step"]),
                   int(s.get("requested", 0)), int(s.get("active", 0)))


@attrs.define
class TaskConcepts:
    """Concepts named by the task's segmentation of GAN samples, and the GAN units specific to each (GAN Dissection's
    own dissection, with a segmenter; tensors and names only, checkpointable). They do not depend on the model, so
    they are computed once per run."""

    names: list[str]  # the concepts kept, in the order of ranking's rows
    ranking: Tensor  # Long[K, C]: units by descending specificity
    specificity: Tensor  # Float[K, C]
    thresholds: Tensor  # Float[C]: a unit's "on" level in the dissection
    sizes: Tensor  # Long[K]: how many units are specific to each concept (its first sizes[k] in ranking)
    dropped: list[str] = attrs.field(factory=list)  # concepts without a unit of their own
    # every concept the task names (kept and dropped, in the task's order) and the layer's mean feature over the
    # dissection's cells that hold it, Float[N, C] (NaN where no cell did): the ends of a steering edit
    mean_names: list[str] = attrs.field(factory=list)
    means: Tensor | None = None

    def state(self) -> dict[str, Any]:
        return {"names": list(self.names), "ranking": self.ranking, "specificity": self.specificity,
                "thresholds": self.thresholds, "sizes": self.sizes, "dropped": list(self.dropped),
                "mean_names": list(self.mean_names), "means": self.means}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> TaskConcepts:
        # checkpoints written before the means were kept have none: steering then recomputes the concepts
        return cls(list(s["names"]), s["ranking"], s["specificity"], s["thresholds"], s["sizes"],
                   list(s.get("dropped", [])), list(s.get("mean_names", [])), s.get("means"))

    def steering(self, source: list[str], target: list[str]) -> Tensor:
        """Float[M, C]: per edit, the target concept's mean feature minus the source's (names from
        ``mean_names``), the move of a steering edit on the source's cells."""
        index = {n: k for k, n in enumerate(self.mean_names)}
        if self.means is None:
            raise PluginError("these task concepts keep no mean features (dissected before steering existed)")
        src = torch.tensor([index[n] for n in source], dtype=torch.long)
        tgt = torch.tensor([index[n] for n in target], dtype=torch.long)
        return self.means[tgt] - self.means[src]

    def top_units(self, concepts: Tensor, count: int, channels: int) -> Tensor:
        """Bool[M, C]: for each concept index of ``concepts`` (Long[M]), its first ``count`` units by specificity,
        but none beyond the units specific to it: a try that asks for more units ablates only those (the unit after
        them draws something else, often every object's geometry, and ablating it shrinks or removes the object)."""
        concepts = concepts.cpu()
        count = max(0, min(int(count), channels))
        top = self.ranking[concepts, :count]  # [M, count]
        keep = torch.arange(count)[None, :] < self.sizes[concepts][:, None]
        return torch.zeros(len(concepts), channels, dtype=torch.bool).scatter_(1, top, keep)

    def presence(self, features: Tensor, region: Tensor, units: int) -> Tensor:
        """Float[M, K] in [0, 1]: how much of each concept is drawn inside each region: the share of (the concept's
        top ``units`` units, no more than its specific ones, x the region's cells) that are on.
        features: Float[M, C, h, w] (the GAN layer of the images edited); region: Bool[M, h, w]."""
        on = (features.detach().cpu().float() > self.thresholds[None, :, None, None]).float()  # [M, C, h, w]
        r = region.cpu().float()
        per_unit = (on * r[:, None]).sum((2, 3)) / r.sum((1, 2)).clamp_min(1.0)[:, None]  # [M, C]
        u = max(1, units)
        top = self.ranking[:, :u]  # [K, u]
        counted = (torch.arange(top.shape[1])[None, :] < self.sizes[:, None]).float()  # [K, u]: specific units only
        return (per_unit[:, top] * counted).sum(2) / counted.sum(1).clamp_min(1.0)


@torch.no_grad()
def compute_task_concepts(editor: Any, to_input: Any, concept_maps: Any, *, n_dissect: int, seed: int,
                          device: torch.device, z_dim: int, latents: Any = None, quantile: float | None = 0.95,
                          min_specificity: float = 0.05, batch_size: int = 64) -> TaskConcepts:
    """Dissect the edited GAN layer against the task's concepts on ``n_dissect`` GAN samples (latents as in
    :func:`compute_concepts`). ``concept_maps(images)`` takes model inputs Float[B, ...] and returns (names,
    Bool[B, K, S, S]): where each named concept is in each image. Maps are pooled onto the layer's grid (a cell holds
    a concept when half of its pixels do). Units are ranked per concept by :func:`specificity`; a concept whose best
    unit's specificity is below ``min_specificity`` has no unit of its own (e.g. a default value that no unit
    draws) and is dropped, as ablating its "units" would remove the object rather than change it."""
    gen = torch.Generator().manual_seed(seed)
    acts, segs, names = [], [], None
    for start in range(0, n_dissect, batch_size):
        m = min(batch_size, n_dissect - start)
        z = (latents(m, gen) if latents is not None else torch.randn(m, z_dim, generator=gen)).to(device)
        h = editor.features(z)
        got_names, maps = concept_maps(to_input(editor.generate(z, features=h)))
        got_names = [str(n) for n in got_names]
        maps = torch.as_tensor(maps)
        if maps.dim() != 4 or maps.shape[0] != m or maps.shape[1] != len(got_names):
            raise PluginError(f"task resource concept_maps returned maps of shape {tuple(maps.shape)} for {m} images "
                              f"and {len(got_names)} names; expected ({m}, {len(got_names)}, S, S)")
        if names is not None and got_names != names:
            raise PluginError("task resource concept_maps named its concepts differently from one batch to the next")
        names = got_names
        pooled = torch.nn.functional.adaptive_avg_pool2d(maps.float().cpu(), h.shape[-2:]) >= 0.5
        acts.append(h.cpu())
        segs.append(pooled)
    if not names:
        raise PluginError("task resource concept_maps named no concepts")
    acts_all, segs_all = torch.cat(acts), torch.cat(segs)  # Float[N, C, h, w], Bool[N, K, h, w]
    iou, thresholds = unit_ious(acts_all, segs_all, quantile)
    cells = segs_all.float()
    counts = cells.sum((0, 2, 3))  # [K]
    means = torch.einsum("nchw,nkhw->kc", acts_all.float(), cells) / counts[:, None]  # NaN where no cell holds it
    spec = specificity(iou)
    ranking = spec.argsort(dim=1, descending=True)
    best = spec.gather(1, ranking[:, :1])[:, 0]
    keep = (best >= min_specificity).nonzero().flatten()
    sizes = (spec.gather(1, ranking) >= min_specificity).sum(1)  # ranked by specificity: the specific ones first
    return TaskConcepts([names[k] for k in keep.tolist()], ranking[keep], spec[keep], thresholds, sizes[keep],
                        [names[k] for k in range(len(names)) if k not in set(keep.tolist())], list(names), means)


@torch.no_grad()
def compute_concepts(model: Any, data: Any, editor: Any, to_input: Any, *, n_clusters: int | None,
                     max_datapoints: int, n_dissect: int, unit_quantile: float | None, seed: int, device: torch.device,
                     batch_size: int = 64, step: int = 0, active_fraction: float | None = None,
                     latents: Any = None) -> Concepts:
    """Datapoints from up to ``max_datapoints`` training pairs, unit clusters (``n_clusters``, or ``active_fraction``
    of the units that fire; see :func:`cluster_units`), and the dissection of the GAN layer on ``n_dissect`` GAN
    samples. Their latents are ``latents(n, generator)`` (Float[n, Z]; a task's ``resources["sample_latents"]``), by
    default standard normal ``torch.randn(n, Z)`` from a generator seeded by ``seed``, the prior most GANs are trained
    with: a GAN trained on another prior must say so, or the dissection ranks units on images it never draws."""
    was_training = model.training
    model.eval()
    n = min(max_datapoints, len(data))
    points, vectors = [], []
    for start in range(0, n, batch_size):
        batch = data.batch(torch.arange(start, min(n, start + batch_size)))
        batch = batch.to(device)
        image = model.encode(0, batch.a)
        audio = model.encode(1, batch.b)
        d, v, _ = peak_datapoints(model, image, audio)
        points.append(d.cpu())
        vectors.append(v.cpu())
    datapoints, image_vectors = torch.cat(points), torch.cat(vectors)
    counts: dict = {}
    centroids = cluster_units(datapoints, n_clusters, active_fraction=active_fraction, stats=counts)
    mu, sigma = image_vectors.mean(0), image_vectors.std(0)
    z_dim = int(data.batch(torch.arange(1)).extras["latent"].shape[1])
    acts, segs = dissection_maps(model, editor, to_input, centroids, mu, sigma, n_dissect=n_dissect, seed=seed,
                                 device=device, z_dim=z_dim, latents=latents, batch_size=batch_size)
    ranking, iou = rank_units(acts, segs, unit_quantile)
    if was_training:
        model.train()
    return Concepts(centroids, mu, sigma, ranking, iou, step, counts["requested"], counts["active"])


@torch.no_grad()
def dissection_maps(model: Any, editor: Any, to_input: Any, centroids: Tensor, mu: Tensor, sigma: Tensor, *,
                    n_dissect: int, seed: int, device: torch.device, z_dim: int, latents: Any = None,
                    batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """What the dissection compares, on ``n_dissect`` GAN samples (latents as in :func:`compute_concepts`): the
    edited layer's activations Float[N, C, H, W] and the concepts' segmentation of the same images by the model,
    Bool[N, K, H, W] (the model's map pooled onto the layer's grid when they differ)."""
    gen = torch.Generator().manual_seed(seed)
    acts, segs = [], []
    for start in range(0, n_dissect, batch_size):
        m = min(batch_size, n_dissect - start)
        z = (latents(m, gen) if latents is not None else torch.randn(m, z_dim, generator=gen)).to(device)
        h = editor.features(z)
        images = to_input(editor.generate(z, features=h))
        feats = model.encode(0, images).values
        if feats.shape[-2:] != h.shape[-2:]:
            feats = torch.nn.functional.adaptive_avg_pool2d(feats, h.shape[-2:])
        acts.append(h.cpu())
        segs.append(cluster_segmentation(feats.cpu(), centroids, mu, sigma))
    return torch.cat(acts), torch.cat(segs)
