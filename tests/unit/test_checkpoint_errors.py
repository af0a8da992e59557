"""An unreadable checkpoint is one clear error, and torch's advice to load it with weights_only=False (which runs any
code the file carries) is never passed on (issue 17, item 10)."""

import random

import pytest
import torch

from negmine import CheckpointError
from negmine import checkpoint as ckpt
from negmine.cli import main


def write_random(path, seed=0):
    # Seeded: torch takes one of several code paths depending on the first bytes, and a test must not flip between them.
    path.write_bytes(random.Random(seed).randbytes(4096))
    return path


@pytest.mark.parametrize("kind", ["random bytes", "pickled object", "not a zip of tensors", "empty"])
def test_unreadable_files_are_named_without_the_weights_only_advice(kind, tmp_path):
    path = tmp_path / "x.pt"
    if kind == "random bytes":
        write_random(path)
    elif kind == "pickled object":
        torch.save({"format": 1, "opener": open}, path)
    elif kind == "not a zip of tensors":
        import zipfile

        zipfile.ZipFile(path, "w").writestr("a", "b")
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        ckpt.load(path)
    text = str(err.value)
    assert text.startswith(f"checkpoint {str(path)!r} cannot be read: ") and "\n" not in text
    assert "weights_only" not in text and "trusted source" not in text
    if kind == "pickled object":
        assert "pickled Python object (io.open)" in text


def test_read_tensors_names_what_it_reads(tmp_path):
    with pytest.raises(CheckpointError, match=r"^GAN checkpoint '.*gan\.pt' cannot be read: it is not a torch (file|checkpoint)"):
        ckpt.read_tensors(write_random(tmp_path / "gan.pt"), what="GAN checkpoint")
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(ckpt.read_tensors(tmp_path / "ok.pt")["w"], torch.ones(2))


def test_eval_of_a_random_checkpoint_exits_2_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "toy", "--profile", "small", "--steps", "2", "--run-dir", str(run), "-q"]) == 0
    capsys.readouterr()
    bad = write_random(tmp_path / "bad.pt")
    assert main(["eval", str(run), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and len(err.strip().splitlines()) == 1, err
    assert "weights_only" not in err and "Traceback" not in err
