"""A word-level tokenizer and a small transformer text encoder, trained from scratch with the tiny text-to-image
MMDiT of chapter §2.6 (SD3 uses frozen CLIP and T5 encoders; this book has neither, so the encoder is learned
jointly with the denoiser on Fashion-MNIST captions, see :mod:`diffu.captions`)."""

from __future__ import annotations

import re

import torch
from torch import nn

from .transformer import Attention, feed_forward

__all__ = ["TextEncoder", "WordTokenizer"]


class WordTokenizer:
    """Lower-cased words → integer ids over a fixed vocabulary. Id 0 is padding, id 1 the start token that begins
    every sequence (so the empty caption — the null condition of classifier-free guidance — is one token).

    ``tokenizer(["a photo of a bag"])`` → ``(N, max_len)`` long tensor. Unknown words raise ``ValueError`` naming
    them (the vocabulary is the caption grammar's, see :func:`diffu.captions.vocabulary`)."""

    PAD, START = 0, 1

    def __init__(self, words, max_len: int = 12):
        words = list(dict.fromkeys(words))  # keep order, drop repeats
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {max_len}")
        self.words = ["<pad>", "<start>"] + words
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.max_len = max_len

    def __len__(self):
        return len(self.words)

    def split(self, caption: str) -> list[str]:
        return re.findall(r"[a-z][a-z\-]*", caption.lower())

    def __call__(self, captions, device=None) -> torch.Tensor:
        if isinstance(captions, str):
            captions = [captions]
        out = torch.zeros(len(captions), self.max_len, dtype=torch.long)
        for i, cap in enumerate(captions):
            words = self.split(cap)
            unknown = [w for w in words if w not in self.ids]
            if unknown:
                raise ValueError(f"caption {cap!r} has words outside the vocabulary: {unknown}")
            if len(words) + 1 > self.max_len:
                raise ValueError(f"caption {cap!r} has {len(words)} words; at most {self.max_len - 1} fit")
            out[i, : len(words) + 1] = torch.tensor([self.START] + [self.ids[w] for w in words])
        return out.to(device)

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [" ".join(self.words[i] for i in row.tolist() if i > self.START) for row in ids]


class TextEncoder(nn.Module):
    """``encoder(ids) -> (tokens (N, L, D), pooled (N, D))``: token + learned position embeddings, ``depth``
    pre-norm transformer layers with padding masked out of the keys, and a pooled vector (mean over the non-padding
    tokens) that plays the role of SD3's pooled CLIP embedding."""

    def __init__(self, vocab_size: int, dim: int, max_len: int, depth: int = 1, num_heads: int = 4):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                dict(
                    norm1=nn.LayerNorm(dim),
                    attn=Attention(dim, num_heads),
                    norm2=nn.LayerNorm(dim),
                    mlp=feed_forward(dim, 4.0),
                )
            )  # fmt: skip
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.ndim != 2 or ids.shape[1] > self.pos.shape[1]:
            raise ValueError(f"ids must be (N, L) with L <= {self.pos.shape[1]}, got {tuple(ids.shape)}")
        keep = ids != WordTokenizer.PAD  # (N, L)
        h = self.token(ids) + self.pos[:, : ids.shape[1]]  # (N, L, D)
        mask = keep[:, None, None, :]  # (N, 1, 1, L): every query sees the real tokens only
        for layer in self.layers:
            h = h + layer["attn"](layer["norm1"](h), mask=mask)
            h = h + layer["mlp"](layer["norm2"](h))
        h = self.norm(h)
        w = keep.to(h.dtype)[..., None]  # (N, L, 1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1)  # (N, D)
        return h, pooled
