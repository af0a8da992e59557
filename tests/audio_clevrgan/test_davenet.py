"""DaveNet's shapes and lengths, architecture overrides, and the padding of audio features."""

from __future__ import annotations

import pytest
import torch

from audio_clevrgan.davenet import build_model, parse_overrides
from audio_clevrgan.task import fill_padding


def test_shapes_and_output_lengths_match_pooling():
    model = build_model("tiny")
    image = model.encode(0, torch.rand(2, 3, 64, 64))
    assert image.values.shape == (2, 16, 8, 8)
    feats = torch.randn(2, 1, 40, 100)
    audio = model.encode(1, (feats, torch.tensor([100, 37])))
    t = audio.values.shape[-1]
    # every pool maps L -> floor((L - 1) / 2) + 1, applied to the true length of each caption
    expected = []
    for n in (100, 37):
        for _ in range(model.audio.pools):
            n = (n - 1) // 2 + 1
        expected.append(min(n, t))
    assert audio.lengths.tolist() == expected


def test_overrides_are_typed_and_checked():
    assert parse_overrides("dim=32, image_relu=false,audio_widths=8/16/16/16, image_blocks=8x1/16x1/16x2") == [
        ("dim", 32), ("image_relu", False), ("audio_widths", (8, 16, 16, 16)),
        ("image_blocks", ((8, 1), (16, 1), (16, 2)))]
    assert parse_overrides("") == []
    with pytest.raises(ValueError) as err:
        parse_overrides("dimm=3,image_relu=maybe,batchnorm")
    text = str(err.value)
    assert "did you mean 'dim'" in text and "image_relu" in text and "'batchnorm' is not FIELD=VALUE" in text
    model = build_model("tiny", overrides=parse_overrides("image_relu=false"))
    assert model.image.final_relu is False  # DaveNet's original: no ReLU after the last image conv
    assert build_model("tiny").image.final_relu is True and build_model("cpu").image.final_relu is False
    images = torch.rand(2, 3, 64, 64)
    assert (model.encode(0, images).values < 0).any() and (build_model("tiny").encode(0, images).values >= 0).all()


def test_fill_padding_only_touches_frames_past_each_length():
    feats = torch.zeros(2, 1, 3, 5)
    out = fill_padding(feats, torch.tensor([5, 2]), -80.0)
    assert torch.equal(out[0], feats[0])
    assert torch.equal(out[1, 0, :, :2], torch.zeros(3, 2)) and bool((out[1, 0, :, 2:] == -80).all())
    assert fill_padding(feats, torch.tensor([1, 1]), 0.0) is feats  # the paper's 0 dB padding: nothing to do


def test_unknown_davenet_option_is_a_clear_error(tmp_path, capsys):
    from negmine.cli import main

    # the option is checked before the dataset is read
    code = main(["train", "--task", "audio-clevrgan", "--task-option", "davenet=dimm=4",
                 "--task-option", f"data_dir={tmp_path}", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'dim'" in err and "Traceback" not in err


def test_checkpoints_record_the_image_relu():
    with_relu = build_model("tiny", overrides=parse_overrides("image_relu=true"))
    images = torch.rand(2, 3, 64, 64)
    state = with_relu.state_dict()
    assert bool(state["image.arch_image_relu"]) is True
    # a model built without the ReLU (e.g. a later profile default) takes the checkpoint's word for it
    plain = build_model("tiny", overrides=())
    plain.image.final_relu = False
    plain.load_state_dict(state)
    assert plain.image.final_relu is True
    assert torch.equal(plain.encode(0, images).values, with_relu.encode(0, images).values)
    # a checkpoint from before the flag was recorded was trained with the ReLU (every profile's old default) ...
    old = {k: v for k, v in state.items() if k != "image.arch_image_relu"}
    plain = build_model("tiny", overrides=parse_overrides("dim=16"))
    plain.image.final_relu = False
    plain.load_state_dict(old)
    assert plain.image.final_relu is True
    # ... unless the user says otherwise explicitly
    given = build_model("tiny", overrides=parse_overrides("image_relu=false"))
    given.load_state_dict(old)
    assert given.image.final_relu is False and (given.encode(0, images).values < 0).any()
    # and a recorded flag that contradicts an explicit one is an error naming both
    with pytest.raises(RuntimeError, match="trained with image_relu=true, but image_relu=false was given"):
        given.load_state_dict(state)


def test_image_center_removes_each_images_mean_region_and_is_recorded():
    centred = build_model("tiny", overrides=parse_overrides("image_center=true"))
    images = torch.rand(3, 3, 64, 64)
    regions = centred.encode(0, images).values  # Float[3, D, 8, 8]
    assert torch.allclose(regions.mean(dim=(2, 3)), torch.zeros(3, regions.shape[1]), atol=1e-6)
    centred_state = {k: v.clone() for k, v in centred.state_dict().items()}
    plain = build_model("tiny")
    plain.load_state_dict({k: v for k, v in centred_state.items() if k != "image.arch_image_center"},
                          strict=False)
    raw = plain.encode(0, images).values
    assert torch.allclose(regions, raw - raw.mean(dim=(2, 3), keepdim=True), atol=1e-6)
    # an old checkpoint (no flag) was trained uncentred: loading it into a centred model is an error, and back
    with pytest.raises(RuntimeError, match="trained with image_center=false"):
        centred.load_state_dict({k: v for k, v in plain.state_dict().items() if k != "image.arch_image_center"})
    with pytest.raises(RuntimeError, match="trained with image_center=true"):
        plain.load_state_dict(centred_state)


def test_count_matched_auc_ignores_a_score_that_only_follows_the_object_count():
    from audio_clevrgan.evaluate import auc, matched_auc

    # images with the value hold more objects; the score falls with the count and, within a count, ranks the
    # images with the value first: the plain AUC is fooled by the count, the matched one is not
    pos_counts, neg_counts = [4, 4, 5, 5], [2, 2, 4, 5]
    pos = torch.tensor([-4.0, -4.0, -5.0, -5.0]) + 0.5
    neg = -torch.tensor(neg_counts, dtype=torch.float)
    assert auc(pos, neg) < 0.5
    assert matched_auc(pos, neg, pos_counts, neg_counts) == 1.0
    # equal scores count half; no pair of equal counts gives None
    assert matched_auc(torch.zeros(2), torch.zeros(1), [3, 3], [3]) == 0.5
    assert matched_auc(torch.zeros(2), torch.zeros(1), [3, 3], [2]) is None
