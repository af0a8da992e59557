"""A text–image dual encoder whose text tower emits one vector per token, so matchmaps (and GAN edits) work.

Shapes: image Float[B, 3, S, S] -> Float[B, D, 8, 8] (the Audio CLEVRGAN image tower); text (tokens Long[B, L],
lengths Long[B]) -> Float[B, D, L] with valid lengths. MISA averages, over the caption's tokens, the best match of each
token anywhere in the image: the written analogue of DaveNet's spoken frames.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from audio_clevrgan.davenet import DavenetConfig, ImageEncoder
from negmine import DualEncoder, Embedding, MatchmapScore

PAD, UNK = 0, 1
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-case alphabetic words of a caption (punctuation and digits dropped)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id. Ids 0 and 1 are padding and unknown; the rest are sorted by descending count, then
    alphabetically, so the same captions always give the same ids."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos = ["<pad>", "<unk>", *tokens]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        counts = Counter(w for t in texts for w in words(t))
        return cls(w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: list[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        """Captions -> (ids Long[N, max_tokens] right-padded with PAD, cut after max_tokens; lengths Long[N] >= 1)."""
        ids = torch.full((len(texts), max_tokens), PAD, dtype=torch.long)
        lengths = torch.ones(len(texts), dtype=torch.long)
        for i, text in enumerate(texts):
            row = [self.stoi.get(w, UNK) for w in words(text)][:max_tokens] or [UNK]
            ids[i, : len(row)] = torch.tensor(row)
            lengths[i] = len(row)
        return ids, lengths


class TextEncoder(nn.Module):
    """Token embedding -> 1-D convs (kernel 3, ReLU) -> Float[B, D, L]: each token's vector sees its neighbours, so
    "red cube" and "red sphere" give different "red" vectors."""

    def __init__(self, vocab_size: int, dim: int, width: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        convs: list[nn.Module] = []
        for _ in range(layers):
            convs += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        convs.append(nn.Conv1d(width, dim, 1))
        self.net = nn.Sequential(*convs)

    def forward(self, ids: Tensor, lengths: Tensor) -> Embedding:
        """ids Long[B, L], lengths Long[B] -> Embedding(Float[B, D, L], lengths)."""
        x = self.embed(ids).transpose(1, 2)  # [B, W, L]
        return Embedding(self.net(x), lengths.clamp(1, ids.shape[1]))


class TextImageModel(DualEncoder):
    """Side a = image (dense 8x8 map), side b = caption tokens; MISA matchmap score."""

    sides = ("image", "text")

    def __init__(self, vocab_size: int, image: DavenetConfig, text_width: int = 128, text_layers: int = 2) -> None:
        super().__init__(MatchmapScore(image.aggregation))
        self.image = ImageEncoder(image)
        self.text = TextEncoder(vocab_size, image.dim, text_width, text_layers)

    def encode(self, side: int, inputs) -> Embedding:
        """side 0: images Float[B, 3, S, S] in [0, 1] or UInt8; side 1: (ids Long[B, L], lengths Long[B])."""
        if side == 0:
            return Embedding(self.image(inputs))
        ids, lengths = inputs
        return self.text(ids.long(), lengths)
