"""The only importer of llama.cpp's multimodal library (mtmd): a model's projector, and images turned
into embeddings the engine prefills like prompt tokens.

A prompt with images is tokenized by mtmd from parts (text, image, text...), so a marker-like string
in the user's text is never taken for an image. Each image chunk is encoded once; its embeddings are
kept in a small cache keyed by the image's sha256 (the same image in a later request is not
encoded again), and the engine's prefix cache keys the image's KV cells by that hash too.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import llama_cpp.mtmd_cpp as mtmd

log = logging.getLogger(__name__)

CACHE_BYTES = 128 << 20  # encoded images kept, by the size of their embeddings (tokens x n_embd floats)


class VisionError(ValueError):
    """An image the projector cannot take: the request's fault (a 400)."""


@dataclass
class ImageChunk:
    """One image of a prompt, encoded: `embd` holds n_tokens rows of the text model's n_embd."""

    sha256: str
    embd: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.embd.shape[0])


class Vision:
    def __init__(self, mmproj: str, text_model: Any, n_embd: int, n_threads: int, use_gpu: bool = False):
        """`text_model` is the llama_model pointer of the loaded text model (runner.llama), `n_embd`
        its embedding size."""
        self.n_embd = n_embd
        p = mtmd.mtmd_context_params_default()
        p.use_gpu = use_gpu
        p.n_threads = max(1, n_threads)
        p.print_timings = False
        p.warmup = False
        self.ctx = mtmd.mtmd_init_from_file(mmproj.encode(), text_model, p)
        if not self.ctx:
            raise RuntimeError(f"unable to load the projector {mmproj} (not an mmproj GGUF for this model?)")
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise RuntimeError(f"the projector {mmproj} has no vision encoder")
        if mtmd.mtmd_decode_use_mrope(self.ctx):
            self.close()
            raise RuntimeError("this projector needs M-RoPE positions (Qwen2-VL family), not supported yet")
        self.non_causal = bool(mtmd.mtmd_decode_use_non_causal(self.ctx, None))
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # one encode at a time; the cache is shared by request threads
        self.stats = {"image_encodes": 0, "image_cache_hits": 0, "image_encode_seconds": 0.0}

    def _bitmap(self, data: bytes, fmt: str) -> Any:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bm = mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False) if fmt != "webp" else None
        if not bm and fmt == "webp":
            bm = self._pillow_bitmap(data)
        if not bm:
            raise VisionError(f"invalid image: the {fmt.upper()} data could not be decoded"
                              + (" (WebP needs Pillow or ffmpeg installed)" if fmt == "webp" else ""))
        return bm

    def _pillow_bitmap(self, data: bytes) -> Any:
        """WebP (stb_image cannot read it): decoded by Pillow when installed, else by mtmd's ffmpeg."""
        try:
            import io

            from PIL import Image  # optional dependency
        except ImportError:
            buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            return mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False)
        try:
            img = Image.open(io.BytesIO(data))
            img.seek(0)
            rgb = img.convert("RGB").tobytes()
            w, h = img.size
        except Exception:
            return None
        arr = (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb)
        return mtmd.mtmd_bitmap_init(w, h, arr)

    def tokenize(self, parts: list[str | tuple[bytes, str, str]], add_special: bool) -> list[list[int] | ImageChunk]:
        """Text parts and (image bytes, format, sha256) parts -> text token lists and encoded images."""
        bitmaps, texts, holders = [], [], []
        try:
            for part in parts:
                p = mtmd.mtmd_input_part()
                if isinstance(part, str):
                    raw = part.encode("utf-8")
                    t = mtmd.mtmd_input_text()
                    t.text, t.text_len, t.add_special, t.parse_special = raw, len(raw), add_special, True
                    texts.append((t, raw))
                    p.text = ctypes.pointer(t)
                else:
                    data, fmt, sha = part
                    bm = self._bitmap(data, fmt)
                    bitmaps.append(bm)
                    mtmd.mtmd_bitmap_set_id(bm, sha.encode())
                    p.bitmap = bm
                holders.append(p)
            arr = (ctypes.POINTER(mtmd.mtmd_input_part) * len(holders))(*[ctypes.pointer(h) for h in holders])
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                with self._lock:
                    rc = mtmd.mtmd_tokenize_from_parts(self.ctx, chunks, arr, len(holders), add_special)
                if rc != 0:
                    raise VisionError(f"the projector could not take the images (mtmd_tokenize error {rc})")
                return [self._item(mtmd.mtmd_input_chunks_get(chunks, i))
                        for i in range(mtmd.mtmd_input_chunks_size(chunks))]
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
        finally:
            for bm in bitmaps:
                mtmd.mtmd_bitmap_free(bm)

    def _item(self, chunk: Any) -> list[int] | ImageChunk:
        kind = mtmd.mtmd_input_chunk_get_type(chunk)
        if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t(0)
            ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            return [int(ptr[i]) for i in range(n.value)]
        if kind != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            raise VisionError("only images are supported by this runner")
        sha = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
        n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        with self._lock:
            embd = self._cache.get(sha)
            if embd is not None and embd.shape[0] == n_tokens:
                self._cache.move_to_end(sha)
                self.stats["image_cache_hits"] += 1
                return ImageChunk(sha, embd)
            t0 = time.perf_counter()
            if mtmd.mtmd_encode_chunk(self.ctx, chunk) != 0:
                raise VisionError("the projector failed to encode the image")
            self.stats["image_encodes"] += 1
            self.stats["image_encode_seconds"] += time.perf_counter() - t0
            n_embd = self.n_embd
            out = mtmd.mtmd_get_output_embd(self.ctx)
            embd = np.ctypeslib.as_array(out, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()
            self._cache[sha] = embd
            while len(self._cache) > 1 and sum(e.nbytes for e in self._cache.values()) > CACHE_BYTES:
                self._cache.popitem(last=False)
            return ImageChunk(sha, embd)

    def close(self) -> None:
        if self.ctx:
            mtmd.mtmd_free(self.ctx)
            self.ctx = None
