"""An image's place in a prompt's token list, for the engine and its prefix cache.

One negative pseudo-token per image row, built from the image's hash and the row's index: the prefix
cache matches a repeated image like repeated text, and one image's KV cells are never taken for
another's. Never sent to llama.cpp as tokens: the engine decodes those rows from embeddings.
"""

from __future__ import annotations

_IMG_ROW_BITS = 20


def image_tokens(key: int, n: int) -> list[int]:
    """The pseudo-tokens of an image of `n` rows whose hash gives `key` (>= 0)."""
    base = key << _IMG_ROW_BITS
    return [-(base + k) - 1 for k in range(n)]


def image_key(sha256: str) -> int:
    return int(sha256[:12], 16)


def split_image_token(tok: int) -> tuple[int, int]:
    """(key, row) of an image pseudo-token."""
    x = -tok - 1
    return x >> _IMG_ROW_BITS, x & ((1 << _IMG_ROW_BITS) - 1)


def not_mid_image(tokens: list[int], n: int) -> int:
    """`n`, moved back to the start of the image it would cut (an image is prefilled whole)."""
    while 0 < n < len(tokens) and tokens[n] < 0 and split_image_token(tokens[n])[1] > 0:
        n -= 1
    return n
