"""Training entry points for the Audio CLEVRGAN models: the GAN and the attribute segmenter.

Plain functions (``train_gan``, ``train_segmenter``, ``load_gan``, ``load_segmenter``) that the CLI wraps, plus a
small argparse entry point::

    PYTHONPATH=examples python -m audio_clevrgan.train_scripts gan --out runs/gan --steps 10000 --device cuda
    PYTHONPATH=examples python -m audio_clevrgan.train_scripts segmenter --out runs/seg --steps 3000

Both trainings are resumable: the full state is written atomically (tmp file + ``os.replace``) every
``ckpt_every`` steps and at the end, and a rerun with ``resume=True`` continues from it. Every random draw of step
``s`` comes from a generator seeded with ``(seed, s)``, so a resumed run follows the same path as an uninterrupted
one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from . import gan as ganlib
from .render import SCENE_PROFILES, SceneConfig, render_scenes, sample_scenes, to_uint8

# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through a temporary file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, scale: int = 1) -> None:
    """Write ``(B, 3, H, W)`` images in [0, 1] as a PNG grid (1-pixel dark gaps)."""
    from PIL import Image

    arr = to_uint8(images)  # (B, H, W, 3)
    B, H, W, _ = arr.shape
    ncol = min(nrow, B)
    nr = math.ceil(B / ncol)
    grid = np.full((nr * (H + 1) + 1, ncol * (W + 1) + 1, 3), 30, np.uint8)
    for i in range(B):
        r, c = divmod(i, ncol)
        grid[1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = arr[i]
    img = Image.fromarray(grid)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def _sample_chunk(args: tuple[int, int, int, SceneConfig]):
    seed, chunk, n, cfg = args
    return sample_scenes(np.random.default_rng([seed, chunk]), n, cfg)


def sample_bank_scenes(seed: int, n: int, cfg: SceneConfig, workers: int = 1, chunk: int = 500) -> list:
    """``n`` scenes, chunk ``c`` drawn from ``default_rng([seed, c])``: the same scenes for any ``workers``."""
    jobs = [(seed, c, min(chunk, n - c * chunk), cfg) for c in range(math.ceil(n / chunk))]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
            parts = list(ex.map(_sample_chunk, jobs))
    else:
        parts = [_sample_chunk(j) for j in jobs]
    return [s for p in parts for s in p]


def render_bank(
    seed: int,
    n: int,
    resolution: int = 64,
    device: str | torch.device = "cpu",
    cfg: SceneConfig = SCENE_PROFILES["cpu"],
    workers: int = 1,
) -> torch.Tensor:
    """A bank of ``n`` rendered training images, ``(n, 3, R, R)`` uint8 on ``device``."""
    scenes = sample_bank_scenes(seed, n, cfg, workers)
    out = []
    for i in range(0, n, 1024):
        img = render_scenes(scenes[i : i + 1024], resolution=resolution, device=device).images
        out.append((img * 255 + 0.5).clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def scene_bank(
    seed: int, n: int, config: ganlib.GanConfig, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training pairs of a scene-coded generator: painter codes ``(n, K, 11)``, the renderer's images of the
    latents' scenes ``(n, 3, R, R)`` uint8 and their object masks ``(n, 1, R, R)`` uint8, on ``device``.

    Latents are :func:`audio_clevrgan.scene_gan.latent_bank` ``(seed, n)``; each one's scene is
    :func:`~audio_clevrgan.scene_gan.scene_from_z`.
    """
    from .scene_gan import encode_scenes, latent_bank, scene_from_z

    scfg = SCENE_PROFILES[config.scene_profile]
    scenes = [scene_from_z(z, scfg) for z in latent_bank(seed, n, config.z_dim).numpy()]
    codes = encode_scenes(scenes, scfg.max_objects)
    images, masks = [], []
    for i in range(0, n, 1024):
        out = render_scenes(scenes[i : i + 1024], resolution=config.resolution, device=device)
        images.append((out.images * 255 + 0.5).clamp(0, 255).to(torch.uint8))
        masks.append((out.instances > 0).to(torch.uint8)[:, None])
    return codes.to(device), torch.cat(images), torch.cat(masks)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------------
# GAN
# --------------------------------------------------------------------------------------------------------------


GRID_SEED = 12345  # fixed latents of the sample grids


def save_generator(
    G: ganlib.Generator, path: str | os.PathLike, meta: dict | None = None, half: bool = True
) -> None:
    """Write the (EMA) generator alone, fp16 by default: the small file that is committed and loaded."""
    sd = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in G.state_dict().items()}
    atomic_save(
        {
            "kind": "audio_clevrgan.generator",
            "config": G.config.to_dict(),
            "state_dict": sd,
            "meta": meta or {},
        },
        path,
    )


def load_gan(path: str | os.PathLike, device: str | torch.device = "cpu") -> ganlib.Generator:
    """Load a generator written by :func:`save_generator` (or a full training state), in eval mode, float32,
    with gradients off. ``G.generate(z)`` gives ``(B, 3, R, R)`` images in [-1, 1]; ``G.meta`` holds provenance."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck.get("kind") == "audio_clevrgan.gan_state":
        sd, cfg, meta = ck["G_ema"], ck["config"], {"step": ck["step"]}
    else:
        sd, cfg, meta = ck["state_dict"], ck["config"], ck.get("meta", {})
    G = ganlib.build_generator(ganlib.GanConfig.from_dict(cfg))
    G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    G.meta = meta
    return G.to(device).eval().requires_grad_(False)


def _gan_state_dict(st: ganlib.GanState, seed: int, bank_size: int, profile: str) -> dict:
    return {
        "kind": "audio_clevrgan.gan_state",
        "profile": profile,
        "config": st.config.to_dict(),
        "seed": seed,
        "bank_size": bank_size,
        "step": st.step,
        "cpu_seconds": st.cpu_seconds,
        "G": st.G.state_dict(),
        "D": st.D.state_dict(),
        "G_ema": st.G_ema.state_dict(),
        "opt_g": st.opt_g.state_dict(),
        "opt_d": st.opt_d.state_dict(),
        "history": st.history,
    }


def train_gan(
    out_dir: str | os.PathLike,
    steps: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    resume: bool = True,
    profile: str = "cpu",
    config: ganlib.GanConfig | None = None,
    bank_size: int = 20000,
    max_seconds: float | None = None,
    ckpt_every: int = 500,
    sample_every: int = 1000,
    log_every: int = 50,
    workers: int = 1,
    threads: int | None = None,
    scene_config: SceneConfig = SCENE_PROFILES["cpu"],
    verbose: bool = True,
    max_cpu_seconds: float | None = None,
    snapshot_cpu_every: float | None = None,
    features: str | None = None,
) -> dict:
    """Train the GAN on rendered scenes until ``steps`` total steps (or ``max_seconds``), resumably.

    ``max_cpu_seconds`` stops once the process has used that much CPU time in training steps (summed over
    resumed parts: the budget of the recipe comparison, fair when other processes share the machine);
    ``snapshot_cpu_every`` also writes ``generator_cpu<seconds>.pt`` each time that much more CPU time has been
    spent. ``features`` overrides the projected discriminator's feature-network path.

    Writes into ``out_dir``: ``state.pt`` (everything needed to resume), ``generator.pt`` (EMA generator only,
    fp16), ``samples.png`` (8x8 grid of EMA samples from fixed latents; also ``samples_<step>.png`` every
    ``sample_every`` steps) and ``log.jsonl``. Returns a summary dict (steps done, seconds, losses).

    The training images are a bank of ``bank_size`` scenes drawn from ``seed`` (``render_bank``); batch ``s``
    draws its image indices and latents from a generator seeded with ``(seed, s)``.
    """
    _set_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    state_path = out / "state.pt"
    ck = None
    if resume and state_path.exists():
        ck = torch.load(state_path, map_location=device, weights_only=True)
        config = ganlib.GanConfig.from_dict(ck["config"])
        seed, bank_size = ck["seed"], ck["bank_size"]
        profile = ck.get("profile", profile)
    cfg = config or ganlib.GAN_PROFILES[profile]
    if features:
        cfg = dataclasses.replace(cfg, d_features=str(features))
    st = ganlib.build_gan(cfg, seed, device)
    if ck is not None:
        st.G.load_state_dict(ck["G"])
        st.D.load_state_dict(ck["D"])
        st.G_ema.load_state_dict(ck["G_ema"])
        st.opt_g.load_state_dict(ck["opt_g"])
        st.opt_d.load_state_dict(ck["opt_d"])
        st.step, st.history = ck["step"], ck["history"]
        st.cpu_seconds = ck.get("cpu_seconds", 0.0)
        del ck
    t0 = time.time()
    encoder = None
    if cfg.g_arch == "scene":
        # (latent, image) pairs: the latents' own scenes, so scene_config does not apply
        codes_bank, bank, mask_bank = scene_bank(seed, bank_size, cfg, device)
        if cfg.perc_weight > 0:
            from .segmenter import load_segmenter as _load_reader

            encoder = _load_reader(cfg.perc_features, device).requires_grad_(False).eval()
    else:
        bank = render_bank(seed, bank_size, cfg.resolution, device, scene_config, workers)
    t_bank = time.time() - t0
    if verbose:
        print(f"[gan] bank of {bank_size} scenes in {t_bank:.1f}s; start at step {st.step}", flush=True)
    z_grid = ganlib.standard_z(64, GRID_SEED, cfg.z_dim).to(device)
    meta = {"seed": seed, "profile": profile, "bank_size": bank_size, "device": str(device)}
    next_snapshot = (
        (math.floor(st.cpu_seconds / snapshot_cpu_every) + 1) * snapshot_cpu_every if snapshot_cpu_every else None
    )

    def checkpoint(final: bool = False) -> None:
        atomic_save(_gan_state_dict(st, seed, bank_size, profile), state_path)
        save_generator(
            st.G_ema, out / "generator.pt", {**meta, "step": st.step, "cpu_seconds": round(st.cpu_seconds, 1)}
        )
        imgs = (st.G_ema.generate(z_grid) + 1) / 2
        save_grid(imgs, out / "samples.png", scale=2)
        if final or st.step % sample_every == 0:
            save_grid(imgs, out / f"samples_{st.step:06d}.png", scale=2)

    t_start, last_t, last_step = time.time(), time.time(), st.step
    stats: dict = {}
    B = cfg.batch_size
    with open(out / "log.jsonl", "a") as log:
        while st.step < steps:
            if max_seconds is not None and time.time() - t_start > max_seconds:
                break
            if max_cpu_seconds is not None and st.cpu_seconds >= max_cpu_seconds:
                break
            c0 = time.process_time()
            g = _step_generator(seed, st.step)
            idx = torch.randint(bank.shape[0], (B,), generator=g)
            z = torch.randn(2, B, cfg.z_dim, generator=g)
            real = bank[idx.to(device)].float() / 127.5 - 1
            if cfg.g_arch == "scene":
                from .scene_gan import scene_train_step

                idx = idx.to(device)
                stats = scene_train_step(st, real, codes_bank[idx], mask_bank[idx].float(), encoder, g)
            else:
                stats = ganlib.train_step(st, real, z[0].to(device), z[1].to(device), g)
            st.cpu_seconds += time.process_time() - c0
            if next_snapshot is not None and st.cpu_seconds >= next_snapshot:
                save_generator(
                    st.G_ema,
                    out / f"generator_cpu{int(next_snapshot):05d}.pt",
                    {**meta, "step": st.step, "cpu_seconds": round(st.cpu_seconds, 1),
                     "wall_seconds": round(time.time() - t_start, 1)},  # of this process (not summed over resumes)
                )
                next_snapshot += snapshot_cpu_every
            if st.step % log_every == 0 or st.step == steps:
                now = time.time()
                rate = (st.step - last_step) / max(now - last_t, 1e-9)
                last_t, last_step = now, st.step
                vals = {k: round(float(v), 4) for k, v in stats.items()}
                rec = {"step": st.step, **vals, "steps_per_s": round(rate, 2), "t": round(now - t_start, 1),
                       "cpu_s": round(st.cpu_seconds, 1)}
                st.history.append(rec)
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if verbose:
                    print(f"[gan] {rec}", flush=True)
            if st.step % ckpt_every == 0:
                checkpoint()
    checkpoint(final=True)
    last = {k: float(v) for k, v in stats.items()}
    return {"step": st.step, "seconds": time.time() - t_start, "cpu_seconds": st.cpu_seconds,
            "bank_seconds": t_bank, "last": last}


# --------------------------------------------------------------------------------------------------------------
# Segmenter
# --------------------------------------------------------------------------------------------------------------


def train_segmenter(*args, **kwargs):
    """Train the attribute segmenter (see :func:`audio_clevrgan.segmenter.train_segmenter`)."""
    from .segmenter import train_segmenter as _train

    return _train(*args, **kwargs)


def load_segmenter(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a segmenter checkpoint (see :func:`audio_clevrgan.segmenter.load_segmenter`)."""
    from .segmenter import load_segmenter as _load

    return _load(path, device)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m audio_clevrgan.train_scripts", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("gan", "segmenter"):
        q = sub.add_parser(name)
        q.add_argument("--out", required=True, help="output directory (resumed if it holds a state)")
        q.add_argument("--steps", type=int, required=True, help="total number of training steps")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--device", default="cpu")
        q.add_argument("--no-resume", action="store_true")
        q.add_argument(
            "--max-seconds", type=float, default=None, help="stop (and checkpoint) after this long"
        )
        q.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        q.add_argument("--ckpt-every", type=int, default=500)
        q.add_argument("--workers", type=int, default=1, help="processes that sample scenes")
        q.add_argument("--profile", default="cpu", help="model size/recipe profile")
    sub.choices["gan"].add_argument("--bank-size", type=int, default=20000)
    sub.choices["gan"].add_argument("--sample-every", type=int, default=1000)
    sub.choices["gan"].add_argument(
        "--max-cpu-seconds", type=float, default=None, help="stop after this much CPU time in training steps"
    )
    sub.choices["gan"].add_argument(
        "--snapshot-cpu-every", type=float, default=None, help="write generator_cpu<s>.pt every this many CPU s"
    )
    sub.choices["gan"].add_argument("--features", default=None, help="feature network of a projected D")
    sub.choices["segmenter"].add_argument("--fit-seconds", type=float, default=None)
    q = sub.add_parser("quality", help="GAN quality read by the segmenter (and a PNG sheet)")
    q.add_argument("--gan", required=True, help="generator.pt")
    q.add_argument("--segmenter", required=True, help="segmenter.pt")
    q.add_argument(
        "--out", required=True, help="JSON file for the figures (a .md summary is written beside it)"
    )
    q.add_argument("--sheet", default=None, help="PNG sheet of renders, GAN samples and labels")
    q.add_argument("--evaluator", default=None,
                   help="the independent second reader (checkpoints/evaluator.pt): its figures are added under "
                        "'evaluator' and its labels to the sheet")
    q.add_argument("--n", type=int, default=1000)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.what == "quality":
        from .quality import format_quality, gan_quality, make_sheet

        G, seg = load_gan(a.gan, a.device), load_segmenter(a.segmenter, a.device)
        res = gan_quality(G, seg, n=a.n, seed=a.seed, device=a.device)
        text = format_quality(res)
        ev = load_segmenter(a.evaluator, a.device) if a.evaluator else None
        if ev is not None:
            res["evaluator"] = gan_quality(G, ev, n=a.n, seed=a.seed, device=a.device)
            text = ("Read by the segmenter (reader 1):\n\n" + text + "\n\nRead by the independent evaluator "
                    "(reader 2):\n\n" + format_quality(res["evaluator"]))
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
        Path(a.out).with_suffix(".md").write_text(text + "\n")
        if a.sheet:
            make_sheet(G, seg, a.sheet, device=a.device, evaluator=ev)
        print(text)
        return
    common = dict(
        seed=a.seed,
        device=a.device,
        resume=not a.no_resume,
        profile=a.profile,
        max_seconds=a.max_seconds,
        ckpt_every=a.ckpt_every,
        threads=a.threads,
        workers=a.workers,
    )
    if a.what == "gan":
        res = train_gan(
            a.out, a.steps, bank_size=a.bank_size, sample_every=a.sample_every, max_cpu_seconds=a.max_cpu_seconds,
            snapshot_cpu_every=a.snapshot_cpu_every, features=a.features, **common,
        )
    else:
        res = train_segmenter(a.out, a.steps, fit_seconds=a.fit_seconds, **common)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
