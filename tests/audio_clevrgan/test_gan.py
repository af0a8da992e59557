"""GAN: named layers and hooks, training, exact resume, the committed checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

try:
    import audio_clevrgan  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from audio_clevrgan import gan as ganlib
from audio_clevrgan.train_scripts import load_gan, train_gan

CHECKPOINTS = Path(ganlib.__file__).resolve().parent / "checkpoints"
TINY = ganlib.GAN_PROFILES["tiny"]


def test_generator_has_named_layers_and_an_8x8_layer4():
    for name in ("cpu", "gpu"):
        cfg = ganlib.GAN_PROFILES[name]
        G = ganlib.Generator(cfg)
        assert G.layer_names == [f"layer{i}" for i in range(1, 11)] + ["output_64x64"]
        h = G.features(torch.randn(2, cfg.z_dim))
        assert h.shape == (2, cfg.g_channels[1], 8, 8) and cfg.g_channels[1] >= 128
        assert dict(G.named_modules())["layer4"] is G.layer4


def test_generate_range_and_decode_consistency():
    torch.manual_seed(0)
    G = ganlib.Generator(TINY)
    z = torch.randn(3, TINY.z_dim)
    x = G.generate(z)
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        assert torch.allclose(G.decode(G.features(z, "layer4"), "layer4"), G(z), atol=1e-5)
        assert torch.allclose(G.decode(G.features(z, "layer2"), "layer2"), G(z), atol=1e-5)


def test_forward_hook_on_layer4_edits_the_image():
    torch.manual_seed(0)
    G = ganlib.Generator(TINY)
    z = torch.randn(2, TINY.z_dim)
    base = G.generate(z)
    seen = {}

    def keep(module, inp, out):
        seen["h4"] = out.detach().clone()

    h = G.layer4.register_forward_hook(keep)
    assert torch.equal(G.generate(z), base)
    h.remove()
    assert seen["h4"].shape == (2, TINY.g_channels[1], 8, 8)

    def ablate(module, inp, out):  # zero every unit in a 3x3 window (the paper's edit, replacement 0)
        out = out.clone()
        out[:, :, 2:5, 2:5] = 0
        return out

    h = G.layer4.register_forward_hook(ablate)
    edited = G.generate(z)
    h.remove()
    diff = (edited - base).abs().amax(1)  # (B, 16, 16)
    assert diff.amax() > 1e-3
    # the edit is local: the far corner (beyond the receptive field grown by layers 5-6) is untouched
    assert diff[:, 14:, 14:].amax() < 1e-6
    assert torch.equal(G.generate(z), base)  # hook removed


def test_standard_z_rows_do_not_depend_on_n():
    assert torch.equal(ganlib.standard_z(5, 1, 8)[:3], ganlib.standard_z(3, 1, 8))
    assert not torch.equal(ganlib.standard_z(3, 1, 8), ganlib.standard_z(3, 2, 8))


def test_ema_update_is_a_lerp():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ganlib.ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * wa + 0.1 * wb)


@pytest.mark.parametrize("recipe", ["spectral", "equalized"])
def test_discriminator_and_losses(recipe):
    cfg = ganlib.GanConfig(
        **{**TINY.to_dict(), "d_norm": recipe, "loss": "nonsat" if recipe == "equalized" else "hinge"}
    )
    D = ganlib.Discriminator(cfg)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    logits = D(x)
    assert logits.shape == (8,) and torch.isfinite(logits).all()
    assert ganlib.d_loss(cfg, logits, logits) > 0


def _state(out: Path) -> dict:
    return torch.load(out / "state.pt", weights_only=False)


def test_tiny_training_runs_and_resume_equals_uninterrupted(tmp_path):
    kw = dict(profile="tiny", bank_size=32, seed=3, ckpt_every=2, sample_every=2, verbose=False, threads=1)
    r = train_gan(tmp_path / "a", 4, **kw)
    assert r["step"] == 4 and all(map(lambda v: v == v, r["last"].values()))  # no NaN
    train_gan(tmp_path / "b", 2, **kw)
    assert _state(tmp_path / "b")["step"] == 2
    train_gan(tmp_path / "b", 4, **kw)  # resumes from step 2
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert b["step"] == 4
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k, v in a["opt_g"]["state"].items():
        assert torch.equal(v["exp_avg"], b["opt_g"]["state"][k]["exp_avg"])
    # a run that did not resume differs (the check above is not vacuous)
    train_gan(tmp_path / "c", 2, **kw)
    train_gan(tmp_path / "c", 4, resume=False, **{**kw, "seed": 4})
    c = _state(tmp_path / "c")
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in a["G"])
    # artefacts: small generator file, sample grids, no temporary files left behind
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"state.pt", "generator.pt", "samples.png", "log.jsonl", "samples_000004.png"} <= files
    assert not [f for f in files if ".tmp" in f]
    G = load_gan(tmp_path / "a" / "generator.pt")
    assert G.meta["step"] == 4 and not any(p.requires_grad for p in G.parameters())
    z = ganlib.standard_z(2, 0, TINY.z_dim)
    ema = ganlib.Generator(TINY)
    ema.load_state_dict(a["G_ema"])
    assert torch.allclose(G.generate(z), ema.generate(z), atol=2e-2)  # fp16 storage


def test_committed_generator_samples():
    path = CHECKPOINTS / "generator.pt"
    assert path.exists(), "the committed GAN checkpoint is missing"
    assert path.stat().st_size < 8 * 2**20
    G = load_gan(path)
    assert G.config.resolution == 64 and G.config.g_channels[1] >= 128
    z = ganlib.standard_z(8, 0, G.z_dim)
    x = G.generate(z)
    assert x.shape == (8, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert x.std(0).mean() > 0.02  # different latents give different images
    # images look like the renders: a mostly grey floor
    med = x.median(dim=1).values.median()
    assert -0.3 < med < 0.4
    # zeroing layer4 (the edit point) changes what is drawn
    h = G.layer4.register_forward_hook(lambda m, i, o: o * 0)
    y = G.generate(z)
    h.remove()
    assert (y - x).abs().mean() > 0.05
