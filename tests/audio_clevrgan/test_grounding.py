"""The evidence-location test: word spans in the caption audio, and the per-frame evidence split."""

from __future__ import annotations

import json

import torch

from audio_clevrgan.captions import WORD_TO_ATTRIBUTE
from audio_clevrgan.dataset import load_features
from audio_clevrgan.grounding import word_evidence, word_spans
from audio_clevrgan.task import build_task


def _rows(root):
    return [json.loads(line) for line in (root / "rendered" / "manifest.jsonl").read_text().splitlines()]


def test_word_spans_name_the_edited_value_inside_the_caption(acg_rendered):
    rows = _rows(acg_rendered)
    spans = word_spans(rows)
    assert any(s is not None for s in spans)
    for r, s in zip(rows, spans, strict=True):
        if s is None:
            continue
        i, lo, hi = s
        word = r["caption"].split()[i].strip(".,")
        assert WORD_TO_ATTRIBUTE[word] == (r["edit"]["attribute"], r["edit"]["old"])
        assert 0 <= lo < hi <= load_features(acg_rendered / r["audio"]).shape[1] + 5  # within the caption's audio


def test_evidence_split_and_shares(acg_rendered, monkeypatch):
    task = build_task("tiny", options={"data_dir": str(acg_rendered)})
    res = word_evidence(task.model, task, None, torch.device("cpu"))["per_attribute"]
    e = res["all"]
    assert e["n"] >= 1 and 0 < e["covered"] < 1
    for key in ("whole", "word", "other", "share"):
        assert 0.0 <= e[key] <= 1.0

    # evidence equal on every frame: both halves prefer the scene, and the word's share is its share of frames
    calls = {"n": 0}

    def flat(self, imgs, audio):
        calls["n"] += 1
        first = calls["n"] % 2 == 1  # the scene, then its edit
        return torch.full((len(imgs), 8, 8, audio.values.shape[-1]), 1.0 if first else 0.0)

    monkeypatch.setattr(type(task.model.score), "matchmap", flat)
    e = word_evidence(task.model, task, None, torch.device("cpu"))["per_attribute"]["all"]
    assert e["whole"] == e["word"] == 1.0
    assert abs(e["share"] - e["covered"]) < 1e-6


def test_word_learning_figure(acg_rendered, tmp_path):
    from PIL import Image

    from audio_clevrgan.figures import word_learning

    a = build_task("tiny", options={"data_dir": str(acg_rendered)})
    b = build_task("tiny", seed=1, options={"data_dir": str(acg_rendered)})
    out = word_learning([("A", a.model), ("B", b.model)], a, tmp_path / "words.png", ("cube", "red"), n_images=2)
    w, h = Image.open(out).size
    assert h > w / 2  # 4 rows (2 words x 2 models) of 4 tiles
    word_learning([("A", a.model)], a, tmp_path / "iso.png", ("metal",), n_images=1, context=False)
    assert (tmp_path / "iso.png").stat().st_size > 0


def test_figures_evaluation_of_a_run_directory_without_its_training_log(acg_rendered, tmp_path):
    """A checkpoint evaluated in a copied directory (no metrics.jsonl) gets the model's figures, not a traceback."""
    from audio_clevrgan.figures import figures

    task = build_task("tiny", options={"data_dir": str(acg_rendered)})
    out = figures(task.model, task, tmp_path, torch.device("cpu"))
    assert set(out["files"]) == {"retrieval", "heatmaps"}
    assert (tmp_path / "fig-retrieval.png").stat().st_size > 0 and not (tmp_path / "fig-training.png").exists()
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    assert set(figures(task.model, task, tmp_path, torch.device("cpu"))["files"]) == {"retrieval", "heatmaps", "curves"}


def test_audio_receptive_field_matches_the_gradient():
    """The analytic reach of one audio output frame equals the input frames its gradient touches (brute force)."""
    import attrs

    from audio_clevrgan.davenet import PROFILES, AudioEncoder, audio_receptive_field

    configs = [PROFILES["cpu"], PROFILES["paper"], attrs.evolve(PROFILES["cpu"], audio_kernels=(11, 5, 5, 5)),
               attrs.evolve(PROFILES["tiny"], audio_pool_first=True)]
    for cfg in configs:
        cfg = attrs.evolve(cfg, audio_widths=(4, 4, 4, 4), dim=4)
        enc = AudioEncoder(cfg).eval()
        for m in enc.modules():
            if isinstance(m, torch.nn.Conv2d):  # positive weights: no gradient cancels inside the field
                torch.nn.init.constant_(m.weight, 0.01)
                torch.nn.init.zeros_(m.bias)
        # a max-pool passes gradient to one input of three; an average pool of the same geometry reaches them all
        for i, m in enumerate(enc.net):
            if isinstance(m, torch.nn.MaxPool2d):
                enc.net[i] = torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
        x = (torch.rand(1, 1, 40, 1200) + 0.1).requires_grad_()  # positive: no ReLU closes
        out = enc(x, torch.tensor([1200])).values
        out[0, :, out.shape[-1] // 2].sum().backward()
        touched = (x.grad[0, 0].abs().sum(0) > 0).nonzero()
        assert int(touched.max() - touched.min() + 1) == audio_receptive_field(cfg), cfg
    assert audio_receptive_field(PROFILES["cpu"]) == 499


def test_experiment_rows_carry_the_word_frames(acg_rendered):
    from negmine.experiment import _metric_rows

    task = build_task("tiny", options={"data_dir": str(acg_rendered)})
    assert "grounding" in task.evaluators
    g = task.evaluators["grounding"](model=task.model, task=task, run_dir=None, device=torch.device("cpu"))
    rows = _metric_rows({"retrieval": {"mean@1": 0.1, "mean@5": 0.2, "mean@10": 0.3}, "grounding": g})
    assert rows["word-frames"] == g["per_attribute"]["all"]["word"]
    assert rows["word-share"] == g["per_attribute"]["all"]["share"]
    assert "word-frames" not in _metric_rows({"retrieval": {"mean@1": 0, "mean@5": 0, "mean@10": 0},
                                              "grounding": {"per_attribute": {"all": {"n": 0}}}})
