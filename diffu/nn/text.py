"""A word-level tokenizer and a small transformer text encoder, trained from scratch with the tiny text-to-image
MMDiT of chapter §2.6 (SD3 uses frozen CLIP and T5 encoders; this book has neither, so the encoder is learned
jointly with the denoiser on Fashion-MNIST captions, see :mod:`diffu.captions`)."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..checks import check_device, check_int
from .inputs import check_tokens
from .transformer import Attention, feed_forward

__all__ = ["TextEncoder", "WordTokenizer"]

# a word of the vocabulary: what WordTokenizer.split finds in a caption
_WORD = re.compile(r"[a-z][a-z\-]*")


class WordTokenizer:
    """Lower-cased words → integer ids over a fixed vocabulary. Id 0 is padding, id 1 the start token that begins
    every sequence (so the empty caption — the null condition of classifier-free guidance — is one token).

    ``tokenizer(["a photo of a bag"])`` → ``(N, max_len)`` long tensor. Unknown words raise ``ValueError`` naming
    them (the vocabulary is the caption grammar's, see :func:`diffu.captions.vocabulary`).

    Args:
        words: the vocabulary, an iterable of lower-case words (``[a-z][a-z-]*``, what :meth:`split` produces; a
            word of another form could never be looked up). Repeats are dropped.
        max_len: the sequence length, an integer ≥ 2 (the start token and at least one word).
    """

    PAD, START = 0, 1

    def __init__(self, words, max_len: int = 12):
        if isinstance(words, str) or not hasattr(words, "__iter__"):
            raise TypeError(f"words must be an iterable of strings (a list of words), got {type(words).__name__}")
        words = list(words)
        bad = [w for w in words if not isinstance(w, str) or not _WORD.fullmatch(w)]
        if bad:
            raise ValueError(f"words must be lower-case words matching [a-z][a-z-]*, got {bad[:5]!r:.200}")
        words = list(dict.fromkeys(words))  # keep order, drop repeats
        check_int("max_len", max_len, 2)
        self.words = ["<pad>", "<start>"] + words
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.max_len = max_len

    def __len__(self):
        return len(self.words)

    def split(self, caption: str) -> list[str]:
        """The lower-cased words of ``caption`` (punctuation and digits are dropped)."""
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a string, got {type(caption).__name__}")
        return _WORD.findall(caption.lower())

    def __call__(self, captions, device=None) -> torch.Tensor:
        """Token ids ``(N, max_len)`` of a caption or a list of ``N`` captions, on ``device`` (default: the CPU).

        Raises:
            TypeError: ``captions`` is not a string or a list/tuple of strings; ``device`` is not a device.
            ValueError: a word outside the vocabulary, or a caption longer than ``max_len - 1`` words.
        """
        device = check_device("device", device)
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
            raise TypeError(f"captions must be a string or a list of strings, got {type(captions).__name__} "
                            f"{captions!r:.80}")  # fmt: skip
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
        """The captions of token ids ``(N, L)`` (padding and the start token dropped); ids must be in the
        vocabulary."""
        check_tokens(ids, len(self))
        return [" ".join(self.words[i] for i in row.tolist() if i > self.START) for row in ids]


class TextEncoder(nn.Module):
    """``encoder(ids) -> (tokens (N, L, D), pooled (N, D))``: token + learned position embeddings, ``depth``
    pre-norm transformer layers with padding masked out of the keys, and a pooled vector (mean over the non-padding
    tokens) that plays the role of SD3's pooled CLIP embedding.

    Args:
        vocab_size: the number of token ids (≥ 2: padding and start), an integer.
        dim: the token width, an integer ≥ 1 divisible by ``num_heads``.
        max_len: the longest sequence, an integer ≥ 1.
        depth: the number of transformer layers, an integer ≥ 0.
        num_heads: attention heads, an integer ≥ 1.

    The call takes integer ids ``(N, L)`` in ``[0, vocab_size)``, ``L <= max_len``, each row with at least one
    non-padding token (the tokenizer starts every caption with ``<start>``: a row of padding would attend to
    nothing and give NaN), and raises ``ValueError``/``TypeError`` naming ``ids`` otherwise.
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int, depth: int = 1, num_heads: int = 4):
        super().__init__()
        check_int("vocab_size", vocab_size, 2)
        check_int("dim", dim, 1)
        check_int("max_len", max_len, 1)
        check_int("depth", depth, 0)
        check_int("num_heads", num_heads, 1)
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
        check_tokens(ids, self.token.num_embeddings, self.pos.shape[1])
        keep = ids != WordTokenizer.PAD  # (N, L)
        if ids.shape[0] and not bool(keep.any(1).all()):
            raise ValueError("ids must hold at least one non-padding token per row (start each with <start> = 1)")
        h = self.token(ids) + self.pos[:, : ids.shape[1]]  # (N, L, D)
        mask = keep[:, None, None, :]  # (N, 1, 1, L): every query sees the real tokens only
        for layer in self.layers:
            h = h + layer["attn"](layer["norm1"](h), mask=mask)
            h = h + layer["mlp"](layer["norm2"](h))
        h = self.norm(h)
        w = keep.to(h.dtype)[..., None]  # (N, L, 1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1)  # (N, D)
        return h, pooled
