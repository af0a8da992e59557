"""The ``render-edit`` oracle: each negative is its anchor's scene with exactly one attribute of one object changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audio_clevrgan import dataset as ds
from audio_clevrgan.oracle import RenderedEdits
from audio_clevrgan.render import edit_scene, render_scenes, scene_from_dicts, to_uint8
from audio_clevrgan.task import build_task
from audio_clevrgan.vocab import ATTRIBUTES, VALUES
from negmine.errors import ConfigError, MissingCapabilityError
from negmine.testing import check_generator, make_context, make_task


@pytest.fixture
def rendered(acg_rendered):
    return acg_rendered


def test_rendered_rows_keep_their_scene(rendered):
    _, rows = ds.read_dataset(rendered)
    row = rows[3]
    image = to_uint8(render_scenes([scene_from_dicts(row["scene"])], resolution=64).images)[0]
    assert np.array_equal(image, ds.load_image(rendered / row["image"]))  # the stored scene re-renders the PNG


def test_oracle_edits_exactly_one_attribute_of_one_object(rendered):
    task = build_task("tiny", options={"data_dir": str(rendered)})
    assert "scenes" in task.provides
    out = check_generator(RenderedEdits, task, batch_size=8)  # contract, determinism, state round trip
    negs = out[0]
    assert negs.inputs.shape == (8, 1, 3, 64, 64) and negs.inputs.dtype == torch.uint8
    gen = RenderedEdits(seed=0, task=task)
    batch = task.train.batch(torch.arange(8))
    with torch.no_grad():
        emb = (task.model.encode(0, batch.a), task.model.encode(1, batch.b))
        scores = task.model.score_matrix(*emb)
    negs = gen.mine(make_context(scores, task=task, embeddings=emb))[0]
    edited = negs.inputs[:, 0]
    for i in range(8):
        scene = scene_from_dicts(task.train.scenes[i])
        changed = ATTRIBUTES[int(negs.meta["attribute"][i, 0])]
        assert not torch.equal(edited[i], batch.a[i])  # the image changed
        # re-render every single-attribute edit of that attribute: exactly one reproduces the negative
        hits = 0
        for k, obj in enumerate(scene):
            for v in VALUES[changed]:
                if v != getattr(obj, changed):
                    img = torch.from_numpy(to_uint8(render_scenes([edit_scene(scene, k, changed, v)],
                                                                  resolution=64).images)[0]).permute(2, 0, 1)
                    hits += int(torch.equal(img, edited[i]))
        assert hits == 1


def test_oracle_needs_a_rendered_dataset_and_valid_attributes():
    with pytest.raises(MissingCapabilityError):
        RenderedEdits.check_requirements(make_task())
    with pytest.raises(ConfigError, match="subset of"):
        RenderedEdits(RenderedEdits.Options(attributes="shape,colour"))


def test_train_with_the_oracle(rendered, tmp_path):
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "audio-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={rendered}",
                 "-n", "random", "-n", "render-edit", "--render-edit-attributes", "color", "--steps", "2",
                 "--batch-size", "8", "--run-dir", str(run), "-q"]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line][-1]
    assert last["render-edit/side0/count"] == 8
