"""The CPU GAN recipes: lighter generators, the projected discriminator, the readers, CPU-time budgets, safe loading."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

import pytest
import torch

try:
    import audio_clevrgan  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from audio_clevrgan import gan as ganlib
from audio_clevrgan import segmenter as S
from audio_clevrgan.projected import ProjectedDiscriminator, translate
from audio_clevrgan.quality import reader_agreement
from audio_clevrgan.train_scripts import load_gan, load_segmenter, train_gan

TINY = ganlib.GAN_PROFILES["tiny"]


def test_fewer_convolutions_above_a_resolution_keep_layer4_the_8x8_map():
    cfg = ganlib.GAN_PROFILES["cpu-lite-r1"]
    G = ganlib.Generator(cfg)
    # two convolutions at 4, 8 and 16 px (layers 1-6), one at 32 and at 64 px (layers 7, 8)
    assert G.layer_names == [f"layer{i}" for i in range(1, 9)] + ["output_64x64"]
    assert G.features(torch.randn(2, cfg.z_dim)).shape == (2, 128, 8, 8)
    assert G(torch.randn(2, cfg.z_dim)).shape == (2, 3, 64, 64)
    assert G.layer7.upsample and G.layer8.upsample  # the one layer at 32 and 64 px upsamples
    with pytest.raises(ValueError, match="g_double_upto"):
        dataclasses.replace(cfg, g_double_upto=4)


def test_translate_matches_a_clamped_shift_and_passes_gradients():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8).requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    y = translate(x, g, ratio=0.25)
    # recover each image's offset by brute force over every allowed shift and check the whole image
    for b in range(2):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(8) + dy).clamp(0, 7)
                cols = (torch.arange(8) + dx).clamp(0, 7)
                found |= torch.equal(y[b, 0], x[b, 0][rows][:, cols])
        assert found
    y.sum().backward()
    assert x.grad.sum() == x.numel()  # every output pixel sends its gradient to exactly one input pixel


def _features(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "features.pt"
    S.save_segmenter(S.reader_for(S.SEGMENTER_PROFILES["features-tiny"]), path)
    return path


def test_projected_discriminator_is_multiscale_and_keeps_its_encoder_frozen(tmp_path):
    enc = load_segmenter(_features(tmp_path))
    D = ProjectedDiscriminator(enc, resolution=16, mix_channels=(8, 16, 16), head_width=8).train()
    assert not enc.training  # frozen BatchNorm statistics even with D in training mode
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    logits = D(x, torch.Generator().manual_seed(0))
    assert len(logits) == 3 and all(t.shape[0] == 4 and t.shape[1] == 1 for t in logits)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    sum(t.mean() for t in logits).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients flow through the encoder to the image
    assert all(p.grad is None for p in enc.parameters())
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert any(p.grad is not None for p in D.heads.parameters())


def test_projected_recipe_trains_and_resumes_exactly(tmp_path):
    cfg = dataclasses.replace(
        TINY, d_arch="projected", d_features=str(_features(tmp_path)), loss="hinge", augment=True
    )
    kw = dict(config=cfg, bank_size=16, seed=2, ckpt_every=2, sample_every=100, verbose=False, threads=1)
    r = train_gan(tmp_path / "a", 4, **kw)
    assert r["step"] == 4 and r["cpu_seconds"] > 0
    train_gan(tmp_path / "b", 2, **kw)
    train_gan(tmp_path / "b", 4, **kw)
    a, b = (torch.load(tmp_path / p / "state.pt", weights_only=True) for p in ("a", "b"))
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    # the encoder's weights are part of D's state but were never updated
    enc = torch.load(tmp_path / "features.pt", weights_only=True)["state_dict"]
    for k, v in enc.items():
        if v.is_floating_point():
            assert torch.allclose(a["D"]["encoder." + k], v.float()), k
    assert b["cpu_seconds"] > 0


def test_cpu_budget_stops_training_and_writes_snapshots(tmp_path):
    kw = dict(profile="tiny", bank_size=16, verbose=False, threads=1, ckpt_every=1000)
    r = train_gan(tmp_path, 10**6, max_cpu_seconds=0.3, snapshot_cpu_every=0.1, **kw)
    assert 0.3 <= r["cpu_seconds"] < 5 and r["step"] < 10**6
    snaps = sorted(tmp_path.glob("generator_cpu*.pt"))
    assert snaps, "no CPU-time snapshot"
    G = load_gan(snaps[0])
    assert G.meta["cpu_seconds"] >= 0.1 and G.meta["step"] >= 1
    assert 0 < G.meta["wall_seconds"] <= r["seconds"]
    # resuming keeps the CPU time already spent: the budget is not granted again
    r2 = train_gan(tmp_path, 10**6, max_cpu_seconds=0.3, **kw)
    assert r2["step"] == r["step"]


@pytest.mark.parametrize("profile", ["evaluator-tiny", "features-tiny"])
def test_other_reader_architectures_train_and_load(tmp_path, profile):
    res = S.train_segmenter(tmp_path, 2, profile=profile, eval_scenes=4, verbose=False, threads=1)
    assert 0 <= res["pixel_acc_mean"] <= 1
    m = load_segmenter(tmp_path / "segmenter.pt")
    assert type(m).__name__ == {"evaluator-tiny": "DilatedReader", "features-tiny": "FeatureEncoder"}[profile]
    probs = m.predict(torch.rand(3, 3, 64, 64))
    assert probs["shape"].shape == (3, 3, 64, 64)
    assert torch.allclose(probs["color"].sum(1), torch.ones(3, 64, 64), atol=1e-5)


def test_reader_agreement_of_a_reader_with_itself_is_total(tmp_path):
    torch.manual_seed(0)
    r = S.reader_for(S.SEGMENTER_PROFILES["evaluator-tiny"]).eval()
    res = reader_agreement(r, r, n=6)
    assert res["r1_object_acc"] == res["r2_object_acc"] and res["r1_confident"] == res["r2_confident"]
    assert res["agree"] == 1.0 or res["n_both"] == 0


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint would do on load
        return (print, ("executed",))


@pytest.mark.parametrize("loader", [load_gan, load_segmenter])
def test_checkpoints_load_with_weights_only(tmp_path, loader):
    path = tmp_path / "evil.pt"
    torch.save({"kind": "audio_clevrgan.generator", "config": {}, "state_dict": {}, "x": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        loader(path)


def test_report_wall_time_of_a_snapshot_after_the_last_log_row(load_benchmark):
    bench = load_benchmark("gan_recipes")
    log = [{"step": 50, "t": 100.0}, {"step": 100, "t": 200.0}]
    assert bench._wall_seconds({"step": 130, "wall_seconds": 275.0}, log) == 275.0
    assert bench._wall_seconds({"step": 130}, log) == pytest.approx(260.0)  # scaled from step 100
    assert bench._wall_seconds({"step": 10}, log) != bench._wall_seconds({"step": 10}, log)  # nan: no row before


def test_quality_with_the_evaluator_writes_both_readers_figures_and_labels(tmp_path):
    import json

    from PIL import Image

    from audio_clevrgan.train_scripts import main

    train_gan(tmp_path / "gan", 1, profile="tiny", bank_size=8, verbose=False, threads=1)
    for name in ("seg", "ev"):
        S.train_segmenter(tmp_path / name, 1, profile="evaluator-tiny", eval_scenes=2, verbose=False, threads=1)
    common = ["quality", "--gan", str(tmp_path / "gan" / "generator.pt"), "--segmenter",
              str(tmp_path / "seg" / "segmenter.pt"), "--n", "4"]
    main([*common, "--out", str(tmp_path / "one.json"), "--sheet", str(tmp_path / "one.png")])
    main([*common, "--out", str(tmp_path / "two.json"), "--sheet", str(tmp_path / "two.png"),
          "--evaluator", str(tmp_path / "ev" / "segmenter.pt")])
    two = json.loads((tmp_path / "two.json").read_text())
    assert "confident_fraction" in two and "confident_fraction" in two["evaluator"]
    assert "evaluator" not in json.loads((tmp_path / "one.json").read_text())
    assert "independent evaluator" in (tmp_path / "two.md").read_text()
    h1, h2 = Image.open(tmp_path / "one.png").size[1], Image.open(tmp_path / "two.png").size[1]
    assert h2 > h1  # three more labelled rows: the evaluator's reading of rendered and GAN tiles


def test_recipe_benchmark_trains_on_a_named_device_within_a_wall_budget(tmp_path, monkeypatch, load_benchmark):
    """`gan_recipes.py train --device D --wall-seconds S`: the GPU path's command is the CPU one with two flags."""
    bench = load_benchmark("gan_recipes")
    calls = []
    monkeypatch.setattr(bench, "train_gan", lambda out, **kw: calls.append(kw) or {"step": 3, "cpu_seconds": 1.0})
    monkeypatch.setattr(sys, "argv", ["gan_recipes.py", "train", "--recipes", "tiny", "--out", str(tmp_path),
                                      "--device", "cuda", "--wall-seconds", "600"])
    bench.main()
    assert calls[0]["device"] == "cuda" and calls[0]["max_seconds"] == 600.0 and calls[0]["profile"] == "tiny"
    monkeypatch.setattr(sys, "argv", ["gan_recipes.py", "train", "--recipes", "tiny", "--out", str(tmp_path)])
    bench.main()
    assert calls[1]["device"] == "cpu" and calls[1]["max_seconds"] is None
