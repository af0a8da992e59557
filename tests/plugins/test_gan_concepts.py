"""Concepts, dissection and gan-targeted against brute force and planted structure."""

import attrs
import torch

from negmine.testing import make_context
from negmine_gan.concepts import cluster_units, jaccard, rank_units
from negmine_gan.targeted import GanTargetedEdits
from negmine_toy.task import build_toy


def test_jaccard_matches_sets():
    g = torch.Generator().manual_seed(0)
    b = torch.rand(50, 6, generator=g) > 0.6
    j = jaccard(b)
    for u in range(6):
        for v in range(6):
            su, sv = set(b[:, u].nonzero().flatten().tolist()), set(b[:, v].nonzero().flatten().tolist())
            want = 0.0 if u == v else len(su & sv) / max(1e-10, len(su | sv))
            assert abs(float(j[u, v]) - want) < 1e-6


def test_clustering_recovers_planted_unit_groups():
    g = torch.Generator().manual_seed(1)
    n, groups = 2000, [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    d = torch.rand(n, 18, generator=g) * 0.1
    concept = torch.randint(0, 3, (n,), generator=g)
    for k, units in enumerate(groups):  # units of one concept fire together
        rows = (concept == k).nonzero().flatten()
        d[rows[:, None], torch.tensor(units)[None, :]] += 1.0 + torch.rand(len(rows), 1, generator=g)
    centroids = cluster_units(d, n_clusters=3, quantile=0.9)
    found = sorted(sorted(c.nonzero().flatten().tolist()) for c in centroids)
    assert found == groups
    assert torch.allclose(centroids.sum(1), torch.ones(3))


def test_clustering_cuts_at_k_clusters_despite_ties_and_skips_silent_units():
    # sparse datapoints, as from a model whose embedding fires in few units: two planted groups of 5 units, every
    # other pair of units never co-active (Jaccard distance exactly 1, a tie), and 20 units that never fire
    g = torch.Generator().manual_seed(3)
    n, d = 3000, 40
    data = torch.zeros(n, d)
    groups = [list(range(0, 5)), list(range(5, 10))]
    concept = torch.randint(0, 4, (n,), generator=g)
    for k, units in enumerate(groups):
        rows = (concept == k).nonzero().flatten()
        data[rows[:, None], torch.tensor(units)[None, :]] = 1.0 + torch.rand(len(rows), 1, generator=g)
    for u in range(10, 20):  # units that fire alone
        rows = torch.randperm(n, generator=g)[:100]
        data[rows, u] = 2.0 + torch.rand(100, generator=g)
    centroids = cluster_units(data, n_clusters=12, quantile=0.9)
    found = sorted(sorted(c.nonzero().flatten().tolist()) for c in centroids)
    assert found == groups  # a distance cut would give one cluster of all 40 units here
    assert not any(c[20:].any() for c in centroids)


def test_unit_ranking_iou_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    acts = torch.rand(10, 5, 4, 4, generator=g)
    seg = torch.rand(10, 3, 4, 4, generator=g) > 0.7
    ranking, iou = rank_units(acts, seg, quantile=0.8)
    for u in range(5):
        t = torch.quantile(acts[:, u].flatten(), 0.8)
        on = acts[:, u] > t
        for k in range(3):
            inter = (on & seg[:, k]).sum().item()
            union = (on | seg[:, k]).sum().item()
            assert abs(float(iou[k, u]) - inter / union) < 1e-6
    assert torch.equal(ranking[0], iou[0].argsort(descending=True))


def _context(task, n=12):
    batch = task.train.batch(torch.arange(n))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        scores = task.model.score_matrix(*emb)
    return attrs.evolve(make_context(scores, task=task, embeddings=emb), batch=batch)


def test_gan_targeted_terminates_is_seeded_and_checkpointable():
    task = build_toy("gan", seed=0)
    ctx = _context(task)
    opts = GanTargetedEdits.Options(max_datapoints=200, dissect_samples=64, max_tries=5, accept=10.0)
    gen = GanTargetedEdits(opts, seed=4, task=task)
    first = gen.generate(ctx)[0]
    assert (first.meta["tries"] == 5).all()  # never reached, escalation still ends
    assert first.inputs.shape == (12, 1, 3, 16, 16)
    k = gen.concepts.centroids.shape[0]
    assert ((first.meta["cluster"] >= 0) & (first.meta["cluster"] < k)).all()
    # the last try ablates units + 4 * units_step of the layer
    want = round((opts.units + 4 * opts.units_step) * 32)
    assert (first.meta["units"].sum(-1) == want).all()
    again = GanTargetedEdits(opts, seed=4, task=task)
    assert torch.equal(again.generate(ctx)[0].inputs, first.inputs)
    restored = GanTargetedEdits(opts, seed=0, task=task)
    restored.load_state_dict(gen.state_dict())
    assert torch.equal(restored.concepts.ranking, gen.concepts.ranking)


def test_default_clusters_scale_with_the_units_that_fire_and_few_clusters_warn(tmp_path):
    """Issue 17, item 4: 250/512 of D kept one cluster on a narrow model, silently."""
    import torch

    from negmine import Trainer
    from negmine_gan.targeted import PAPER_CLUSTERS, GanTargetedEdits
    from negmine_toy.task import build_toy

    warnings = []

    class Capture:
        def start(self, *a): pass
        def step(self, *a): pass
        def log(self, message): pass
        def warn(self, message): warnings.append(message)
        def close(self): pass

    task = build_toy("gan", seed=0)
    config = {"steps": 2, "negatives": ["random", "gan-targeted"], "eval_size": 20,
              "generators": {"gan-targeted": {"max_datapoints": 64, "dissect_samples": 32, "max_tries": 2}}}
    from negmine import get_plugin_manager

    trainer = Trainer(task, config, plugins=get_plugin_manager(), run_dir=tmp_path / "run", reporter=Capture())
    trainer.fit()
    gen = GanTargetedEdits(GanTargetedEdits.Options(max_datapoints=64, dissect_samples=32), seed=0, task=task)
    gen.refresh(task.model, task.train, torch.device("cpu"), 0)
    c = gen.concepts
    assert 0 < c.active <= 16 and c.requested == max(2, round(PAPER_CLUSTERS * c.active))
    few = [w for w in warnings if "concept cluster(s) of more than 3 units remain" in w]
    if c.centroids.shape[0] <= 2:
        assert len(few) == 1 and f"from the {c.active} embedding units that fire" in few[0], warnings
    # an explicit fraction is of D, as before
    gen = GanTargetedEdits(GanTargetedEdits.Options(clusters=0.5, max_datapoints=64, dissect_samples=32), seed=0,
                           task=task)
    gen.refresh(task.model, task.train, torch.device("cpu"), 0)
    assert gen.concepts.requested == 8


def test_few_clusters_message():
    import torch

    from negmine_gan.concepts import Concepts
    from negmine_gan.targeted import GanTargetedEdits

    gen = GanTargetedEdits()
    gen.concepts = Concepts(torch.ones(1, 32), torch.zeros(32), torch.ones(32), torch.zeros(1, 8, dtype=torch.long),
                            torch.zeros(1, 8), 0, requested=15, active=30)
    assert gen.few_clusters().startswith("gan-targeted: only 1 concept cluster(s) of more than 3 units remain (of 15 "
                                         "requested from the 30 embedding units that fire at the matchmap peaks, D = 32)")
    gen.concepts = Concepts(torch.ones(3, 32), torch.zeros(32), torch.ones(32), torch.zeros(3, 8, dtype=torch.long),
                            torch.zeros(3, 8))
    assert gen.few_clusters() is None


def test_a_layer_off_the_models_grid_is_refused_naming_the_layers_on_it():
    import pytest
    import torch

    from negmine import PluginError
    from negmine.testing import make_context
    from negmine_gan.random_edit import GanRandomEdits
    from negmine_toy.task import build_toy

    task = build_toy("gan", seed=0)
    batch = task.train.batch(torch.arange(8))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
    ctx = make_context(task.model.score_matrix(*emb), task=task, embeddings=emb)
    import attrs

    ctx = attrs.evolve(ctx, batch=batch)
    with pytest.raises(PluginError) as err:
        GanRandomEdits(GanRandomEdits.Options(layer="output.1"), task=task).generate(ctx)
    assert ("GAN layer 'output.1' outputs a 16x16 map, but the model's image map is 8x8; edit a layer on the model's "
            "grid: 'layer4', 'layer4.0', 'layer4.1', 'layer4.2'") in str(err.value)


def _iqr_brute_force(a, s, counts):
    """IQR = I(on; c) / H(on, c) of one unit (a: Float[P]) and one concept (s: Bool[P]) at each count of positions
    on, by counting the 2x2 table directly."""
    import math

    order = sorted(range(len(a)), key=lambda i: -float(a[i]))
    p = len(a)
    out = []
    for k in counts:
        on = set(order[:k])
        cells = [sum(1 for i in range(p) if (i in on) == x and bool(s[i]) == y) / p
                 for x in (True, False) for y in (True, False)]
        ent = lambda *q: -sum(v * math.log(v) for v in q if v > 0)  # noqa: E731
        p_on, p_c = cells[0] + cells[1], cells[0] + cells[2]
        joint = ent(*cells)
        mi = ent(p_on, 1 - p_on) + ent(p_c, 1 - p_c) - joint
        agree = cells[0] + cells[3]
        out.append(0.0 if agree <= 0.8 or p_c < 1e-3 or joint <= 0 else mi / joint)
    return out


def test_iqr_thresholds_match_brute_force():
    from negmine_gan.concepts import iqr_thresholds

    g = torch.Generator().manual_seed(5)
    p, c, k = 300, 4, 3
    seg = torch.rand(k, p, generator=g) > 0.85
    acts = torch.rand(c, p, generator=g)
    acts[1] += 2.0 * seg[0]  # unit 1 predicts concept 0; unit 2 predicts concept 2 weakly
    acts[2] += 0.5 * seg[2]
    levels = 30
    thresholds, best = iqr_thresholds(acts, seg, levels=levels)
    fractions = torch.logspace(-3, 0, levels, dtype=torch.float64)[:-1]
    counts = (fractions * p).round().long().clamp(1, p).tolist()
    for u in range(c):
        table = [(v, n) for concept in range(k)
                 for v, n in zip(_iqr_brute_force(acts[u], seg[concept], counts), counts, strict=True)]
        want = max(v for v, _ in table)
        assert abs(float(best[u]) - want) < 1e-6
        # the threshold switches on exactly the positions of one of the best levels
        n_on = int((acts[u] > thresholds[u]).sum())
        assert any(abs(v - want) < 1e-9 and n == n_on for v, n in table)
    assert abs(int((acts[1] > thresholds[1]).sum()) - int(seg[0].sum())) <= 0.1 * int(seg[0].sum())


def test_iqr_ranking_puts_a_concepts_own_unit_above_a_unit_that_draws_every_object():
    # planted: objects on 30% of positions, a third of them cyan; unit 0 draws every object (strongest on the
    # large ones), unit 1 only the cyan ones. A fixed top-5% cut makes unit 0 look as cyan as unit 1.
    g = torch.Generator().manual_seed(6)
    n, h, w = 400, 4, 4
    objects = torch.rand(n, h, w, generator=g) < 0.3
    cyan = objects & (torch.rand(n, h, w, generator=g) < 0.33)
    large = objects & (torch.rand(n, h, w, generator=g) < 0.5)
    acts = torch.zeros(n, 2, h, w)
    acts[:, 0] = objects * (1.0 + 1.0 * large) + 0.01 * torch.rand(n, h, w, generator=g)
    acts[:, 1] = cyan * 1.0 + 0.01 * torch.rand(n, h, w, generator=g)
    seg = torch.stack([cyan, objects], 1)  # concept 0: cyan, concept 1: any object
    ranking, iou = rank_units(acts, seg, quantile=None)
    assert ranking[0, 0] == 1 and ranking[1, 0] == 0
    assert iou[0, 1] > 0.9 and iou[1, 0] > 0.9
