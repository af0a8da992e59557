"""The text–image example: the vocabulary, the per-token text tower, and GAN-edit generators reused unchanged."""

from __future__ import annotations

import json

import torch

from text_clevrgan.model import PAD, UNK, TextEncoder, Vocabulary, words


def test_vocabulary_is_deterministic_and_encodes():
    texts = ["A red cube, and a red ball.", "the BALL is left of the cube"]
    vocab = Vocabulary.from_texts(texts)
    assert vocab.itos[:2] == ["<pad>", "<unk>"]
    # by descending count, then alphabetically
    assert vocab.itos[2:6] == ["a", "ball", "cube", "red"]
    assert Vocabulary.from_texts(list(reversed(texts))).itos == vocab.itos
    ids, lengths = vocab.encode(["red ball", "a purple cube on the left of a red ball", "!!"], max_tokens=4)
    assert ids.shape == (3, 4) and lengths.tolist() == [2, 4, 1]
    assert ids[0].tolist() == [vocab.stoi["red"], vocab.stoi["ball"], PAD, PAD]
    assert ids[1, 1] == UNK  # "purple" is not in the vocabulary
    assert ids[2].tolist() == [UNK, PAD, PAD, PAD]  # an empty caption still has one token
    assert words("Shiny, METAL-ball!") == ["shiny", "metal", "ball"]


def test_text_encoder_is_per_token_and_contextual():
    torch.manual_seed(0)
    enc = TextEncoder(vocab_size=10, dim=8, width=16, layers=2)
    ids = torch.tensor([[2, 3, 4, 0, 0], [2, 5, 4, 0, 0]])
    out = enc(ids, torch.tensor([3, 3]))
    assert out.values.shape == (2, 8, 5) and out.lengths.tolist() == [3, 3]
    # token 0 is the same word in both captions but its neighbour differs: its vector differs (kernel-3 convs)
    assert not torch.allclose(out.values[0, :, 0], out.values[1, :, 0])
    # tokens beyond the receptive field (2 layers of kernel 3 = +-2) do not change the first token's vector
    far = enc(torch.tensor([[2, 3, 4, 7, 0]]), torch.tensor([4]))
    assert torch.allclose(far.values[0, :, 0], out.values[0, :, 0], atol=1e-6)


def test_text_task_trains_with_gan_edits_and_evaluates(acg_gan, tmp_path, capsys):
    gan_data = acg_gan
    from negmine.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "text-clevrgan", "--profile", "tiny", "--task-option", f"data_dir={gan_data}",
                 "-n", "random", "-n", "gan-targeted", "--gan-targeted-dissect-samples", "16",
                 "--steps", "2", "--batch-size", "8", "--run-dir", str(run), "-q"]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line][-1]
    assert last["gan-targeted/side0/count"] == 8 and last["gan-targeted/tries_mean"] >= 1
    assert main(["eval", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["retrieval"]["n"] == 2
    assert set(out["attributes"]["per_group"]) == {"shape", "material", "color", "size"}
    # the written word after the carrier, scored on its own token map
    assert set(out["attributes"]["context"]["per_word"]) == set(out["attributes"]["per_word"])
