"""The only importer of llama_cpp: a thin, typed wrapper over llama.cpp's batch API."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pathlib
import signal
import threading
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from ollamalike.runner import ggml

EMBED_SEQS = 8  # inputs pooled per embedding decode
LIB_DIR = pathlib.Path(lc.__file__).parent / "lib"  # llama.cpp's libraries, its backends among them
_backend_lock = threading.Lock()
_registry: ggml.Registry | None = None
log = logging.getLogger(__name__)


def registry() -> ggml.Registry:
    """ggml's backend registry, with the backends loaded (once per process)."""
    global _registry
    with _backend_lock:
        if _registry is None:
            reg = ggml.Registry(LIB_DIR)
            # before llama_backend_init, which would look in the wrong places. ggml's line per library
            # loaded is left out (log_backends says which): llama_cpp's log callback prints what its
            # logger's level lets through, and maps ggml's INFO to WARNING (an older level table)
            quiet = logging.getLogger("llama-cpp-python")
            level = quiet.level
            quiet.setLevel(max(level, logging.ERROR))
            try:
                reg.load()
            finally:
                quiet.setLevel(level)
            lc.llama_backend_init()
            _registry = reg
        return _registry


def system_info() -> str:
    registry()  # the CPU line comes from the loaded backend
    return lc.llama_print_system_info().decode("utf-8", "replace")


def cpu_variant() -> str:
    """The CPU backend library ggml chose for this CPU: `haswell (libggml-cpu-haswell.so)`."""
    lib = registry().cpu_library()
    return f"{ggml.cpu_variant(lib)} ({pathlib.Path(lib).name})" if lib else "unknown"


def build_info() -> str:
    """The llama.cpp this runner uses: its backends (from ggml's registry), the CPU variant chosen
    and the CPU features it uses, e.g. `backends: CPU, RPC; CPU variant: haswell (...); CPU: AVX2 FMA ...`."""
    names = registry().names()
    info = system_info()
    cpu = info.split("CPU :", 1)[1].split("\n")[0] if "CPU :" in info else ""
    features = [kv.split("=")[0].strip() for kv in cpu.split("|") if kv.strip().endswith("= 1")]
    return (f"backends: {', '.join(names) or 'unknown'}; CPU variant: {cpu_variant()}; "
            f"CPU: {' '.join(features) or 'baseline'}")


def log_backends() -> None:
    """One line naming the backends and the CPU variant; one more when a GPU backend is shipped
    but no GPU came up (no device, or no driver: its library did not load), saying the CPU runs."""
    reg = registry()
    gpus = reg.gpus()
    log.info("llama.cpp backends: %s; CPU variant: %s%s", ", ".join(reg.names()), cpu_variant(),
             f"; GPUs: {', '.join(gpus)}" if gpus else "")
    shipped = reg.gpu_libraries()
    if shipped and not gpus:
        log.warning("no GPU found (%s present, but no device or driver answered): running on the CPU",
                    ", ".join(shipped))


def physical_cores() -> int:
    """A fair thread count: the CPUs this process may use (llama.cpp likes physical cores)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, n)


class LoadError(RuntimeError):
    pass


# --- llama.cpp's RPC backend (ggml-rpc): remote devices, and the worker's server --------------------
def rpc_supported() -> bool:
    """Whether this llama.cpp was built with GGML_RPC (install.sh builds it so)."""
    return bool(registry().reg_by_name(b"RPC"))


_vp = ctypes.c_void_p


class _Rpc:
    """The RPC backend's entry points, found through ggml's registry as llama.cpp's own tools do
    (a GGML_BACKEND_DL build links no RPC symbol)."""

    def __init__(self) -> None:
        self.reg = registry()
        rpc = self.reg.reg_by_name(b"RPC")
        if not rpc:
            raise LoadError("this llama.cpp has no RPC backend; rebuild it with ./install.sh (GGML_RPC=ON)")
        self.add_server = self.reg.proc(rpc, "ggml_backend_rpc_add_server", ctypes.CFUNCTYPE(_vp, ctypes.c_char_p))
        self.start_server = self.reg.proc(rpc, "ggml_backend_rpc_start_server", ctypes.CFUNCTYPE(
            None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(_vp)))
        if self.add_server is None or self.start_server is None:
            raise LoadError("llama.cpp's RPC backend lacks ggml_backend_rpc_add_server/start_server")


_GetMemory = ctypes.CFUNCTYPE(None, _vp, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))


def rpc_devices(endpoints: tuple[str, ...] | list[str]) -> list[int]:
    """This machine's GPUs (in llama.cpp's order), then every device of each RPC worker: the list
    a model is loaded with, in the order of its tensor_split."""
    api = _Rpc()
    reg = api.reg
    devs = [d for d in (reg.dev_get(i) for i in range(reg.dev_count()))
            if reg.dev_type(d) in (ggml.DEV_GPU, ggml.DEV_IGPU)]
    for ep in endpoints:
        worker = api.add_server(ep.encode())  # llama.cpp aborts the process if it cannot connect
        if not worker:
            raise LoadError(f"rpc worker {ep} has no devices")
        reg.register(worker)
        devs += [reg.reg_dev_get(worker, i) for i in range(reg.reg_dev_count(worker))]
    return devs


def rpc_serve(endpoint: str, threads: int, mem: int = 0) -> None:
    """Run llama.cpp's RPC server on `endpoint` (host:port) exposing this machine's CPU with
    `threads` threads; blocks for good. `mem` > 0 caps the memory the worker offers (bytes)."""
    api = _Rpc()
    cpu = api.reg.dev_by_type(ggml.DEV_CPU)
    if not cpu:
        raise LoadError("llama.cpp has no CPU device")
    if mem > 0:  # the CPU device reports all physical memory as free: offer only `mem` of it
        slot = ctypes.c_void_p.from_address(cpu + 2 * ctypes.sizeof(ctypes.c_void_p))  # iface.get_memory
        real = _GetMemory(slot.value)

        def capped(dev, free, total):
            real(dev, free, total)
            free[0] = min(free[0], mem)
            total[0] = min(total[0], mem)
        _serve_keep.append(_GetMemory(capped))
        slot.value = ctypes.cast(_serve_keep[-1], ctypes.c_void_p).value
    devices = (ctypes.c_void_p * 1)(cpu)
    # the server never returns to Python: Ctrl-C must end the process as SIGTERM does
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    api.start_server(endpoint.encode(), None, max(1, threads), 1, devices)
    raise LoadError(f"the rpc server could not listen on {endpoint} (see the lines above)")


_serve_keep: list[Any] = []  # callbacks llama.cpp holds pointers to


def format_grammar(fmt: Any) -> str | None:
    """The GBNF grammar for a request's `format`: "json" (any JSON object) or a JSON schema.
    None for no constraint; ValueError for a format llama.cpp cannot express."""
    if fmt is None or fmt == "" or fmt == {}:
        return None
    if fmt == "json":
        return JSON_GBNF
    if isinstance(fmt, str):
        try:
            fmt = json.loads(fmt)
        except json.JSONDecodeError:
            raise ValueError(f"invalid format: {fmt!r} is neither \"json\" nor a JSON schema") from None
    if not isinstance(fmt, dict):
        raise ValueError("invalid format: expected \"json\" or a JSON schema object")
    _check_bounds(fmt)
    try:
        return json_schema_to_gbnf(json.dumps(fmt))
    except Exception as exc:  # the converter raises bare exceptions on schemas it cannot handle
        raise ValueError(f"invalid JSON schema in format: {exc}") from None


# A schema's counts become repetitions in the grammar, which llama.cpp expands rule by rule: a large
# one takes the engine thread (and so every stream) for seconds to build.
MAX_SCHEMA_COUNT = 1000
_COUNT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
               "minContains", "maxContains")


def _check_bounds(schema: Any, depth: int = 0) -> None:
    if depth > 64:
        raise ValueError("invalid format: the JSON schema is nested too deeply (64 levels at most)")
    if isinstance(schema, dict):
        for key in _COUNT_KEYS:
            n = schema.get(key)
            if isinstance(n, (int, float)) and not isinstance(n, bool) and n > MAX_SCHEMA_COUNT:
                raise ValueError(f"invalid format: {key} {n} exceeds the limit of {MAX_SCHEMA_COUNT}")
        values = schema.values()
    elif isinstance(schema, list):
        values = schema
    else:
        return
    for v in values:
        _check_bounds(v, depth + 1)


KV_TYPES = {"f16": lc.GGML_TYPE_F16, "q8_0": lc.GGML_TYPE_Q8_0, "q4_0": lc.GGML_TYPE_Q4_0}


# A sequence's KV cells bigger than this are copied between streams on the device, whole stream.
STATE_COPY_MAX = 1 << 30


@dataclass
class LoadParams:
    path: str
    n_ctx: int  # total KV cells, all sequences together
    n_seq_max: int
    n_batch: int = 512
    n_threads: int = 0
    n_gpu_layers: int = 0
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # share of the layers per device index (multi-GPU)
    rpc_servers: tuple[str, ...] = ()  # RPC workers (host:port) whose devices join after local GPUs
    use_mmap: bool = True
    embeddings: bool = False
    # One KV stream per sequence (the default) keeps every sequence's cells laid out exactly as if it
    # ran alone, so batched greedy output is bit-identical to solo output (on CPU while a sequence
    # holds under ~250 cells: past that its lone row's attention is split between threads, a batch's
    # is not; bench/batch_invariance.py --across streams); it reserves
    # n_ctx/n_seq_max cells per slot. A unified cache spends cells only on tokens that exist and
    # shares prefixes without copying, but interleaved cells change the attention's summation order.
    kv_unified: bool = False
    kv_type: str = "f16"  # K and V cache data type: f16, q8_0, q4_0 (quantized V needs flash attention)
    flash_attn: int = -1  # -1 auto, 0 off, 1 on
    num_ctx: int = 0  # the most tokens one sequence may hold (0: n_ctx/n_seq_max, or n_ctx if unified)
    splits: tuple[str, ...] = ()  # the other files of a split GGUF, in order
    loras: tuple[str, ...] = ()  # LoRA adapter GGUFs, applied at scale 1.0 (as Ollama)


def _penalties(n_vocab: int, last_n: int, repeat: float, freq: float, present: float) -> Any:
    """llama.cpp's repetition penalties sampler. The llama.cpp vendored by llama-cpp-python 0.3.x takes
    the vocabulary size first; upstream llama.cpp later dropped it: call whichever the binding has."""
    fn = lc.llama_sampler_init_penalties
    if len(getattr(fn, "argtypes", None) or ()) == 5:
        return fn(n_vocab, last_n, repeat, freq, present)
    return fn(last_n, repeat, freq, present)


class Sampler:
    """One llama.cpp sampler chain (penalties, truncation, temperature, RNG): one per sequence."""

    def __init__(self, model: "LlamaModel", opts: dict[str, Any], grammar: str | None = None,
                 history: list[int] | tuple[int, ...] = ()):
        self._chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda s: lc.llama_sampler_chain_add(self._chain, s)  # noqa: E731
        if grammar:
            g = lc.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
            if not g:
                lc.llama_sampler_free(self._chain)
                raise ValueError("invalid grammar")
            add(g)
        last_n = int(opts.get("repeat_last_n", 64))
        if last_n < 0 or last_n > model.seq_ctx:  # -1 = the whole context; more than that is the same
            last_n = model.seq_ctx
        rp, fp, pp = (float(opts.get(k, d)) for k, d in
                      (("repeat_penalty", 1.0), ("frequency_penalty", 0.0), ("presence_penalty", 0.0)))
        if last_n and (rp != 1.0 or fp or pp):
            penalties = _penalties(model.n_vocab, last_n, rp if rp > 0 else 1.0, fp, pp)
            # The prompt counts as history, as in Ollama's runner (its sampler accepts every prompt token).
            for tok in list(history)[-last_n:]:
                lc.llama_sampler_accept(penalties, tok)
            add(penalties)
        temp = float(opts.get("temperature", 0.8))
        if temp <= 0:
            add(lc.llama_sampler_init_greedy())
            return
        top_k = int(opts.get("top_k", 40))
        if top_k > 0:
            add(lc.llama_sampler_init_top_k(top_k))
        typical = float(opts.get("typical_p", 1.0))
        if 0 < typical < 1:
            add(lc.llama_sampler_init_typical(typical, 1))
        top_p = float(opts.get("top_p", 0.9))
        if 0 < top_p < 1:
            add(lc.llama_sampler_init_top_p(top_p, 1))
        min_p = float(opts.get("min_p", 0.0))
        if min_p > 0:
            add(lc.llama_sampler_init_min_p(min_p, 1))
        add(lc.llama_sampler_init_temp(temp))
        seed = int(opts.get("seed", -1))
        add(lc.llama_sampler_init_dist(lc.LLAMA_DEFAULT_SEED if seed < 0 else seed & 0xFFFFFFFF))

    def sample(self, ctx: Any, row: int) -> int:
        """Sample from the logits of batch row `row`; the chain also accepts the token."""
        return int(lc.llama_sampler_sample(self._chain, ctx, row))

    def free(self) -> None:
        if self._chain:
            lc.llama_sampler_free(self._chain)
            self._chain = None


class LlamaModel:
    """A loaded model with one context whose KV cache is shared by up to `n_seq_max` sequences."""

    def __init__(self, p: LoadParams, share: Any = None):
        """`share` (a runner.cpushare.CpuShare) picks the threads of each step when other runners
        of the same daemon decode at the same time; None keeps the load-time count."""
        registry()  # the backends are loaded before any model
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = p.n_gpu_layers
        mp.main_gpu = p.main_gpu
        if any(p.tensor_split):  # llama.cpp reads one float per device it has: pad to its maximum
            n = max(len(p.tensor_split), int(lc.llama_max_devices()))
            self._split = (ctypes.c_float * n)(*p.tensor_split)
            mp.tensor_split = self._split
        if p.rpc_servers:  # the devices, NULL-terminated: local GPUs, then the workers'
            devs = rpc_devices(p.rpc_servers)
            self._devices = (ctypes.c_void_p * (len(devs) + 1))(*devs, None)
            mp.devices = ctypes.cast(self._devices, ctypes.c_void_p)
        mp.use_mmap = p.use_mmap
        if p.splits:
            paths = [x.encode() for x in (p.path, *p.splits)]
            self.model = lc.llama_model_load_from_splits((ctypes.c_char_p * len(paths))(*paths), len(paths), mp)
        else:
            self.model = lc.llama_model_load_from_file(p.path.encode(), mp)
        if not self.model:
            raise LoadError(f"unable to load model: {p.path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self._loras = []
        for path in p.loras:  # freed with the model
            adapter = lc.llama_adapter_lora_init(self.model, path.encode())
            if not adapter:
                lc.llama_model_free(self.model)
                raise LoadError(f"unable to load LoRA adapter: {path}")
            self._loras.append(adapter)
        cp = lc.llama_context_default_params()
        cp.n_ctx = p.n_ctx
        cp.n_batch = p.n_batch
        cp.n_ubatch = p.n_batch
        cp.n_seq_max = p.n_seq_max
        threads = p.n_threads or physical_cores()
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = p.kv_unified
        cp.flash_attn_type = p.flash_attn
        cp.type_k = cp.type_v = KV_TYPES[p.kv_type]
        cp.embeddings = p.embeddings
        self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise LoadError("unable to create a llama.cpp context (out of memory?)")
        self._apply_loras(self.ctx)
        self.mem = lc.llama_get_memory(self.ctx)
        self.n_ctx = lc.llama_n_ctx(self.ctx)
        self.n_batch = p.n_batch
        self.n_seq_max = lc.llama_n_seq_max(self.ctx)
        self.n_ctx_train = lc.llama_model_n_ctx_train(self.model)
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        self._batch = lc.llama_batch_init(p.n_batch, 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self.n_embd = lc.llama_model_n_embd(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.kv_unified = p.kv_unified
        stream = self.n_ctx if p.kv_unified else self.n_ctx // max(1, p.n_seq_max)
        self.seq_ctx = min(p.num_ctx or stream, stream)  # per-request context (num_ctx)
        self._threads = threads
        self.share = share
        self.threads = threads  # the threads the last step used
        self._embd_ctx = None
        self._rank_ctx = None
        self._embd_batch = None
        self._rerank_template: str | None = None
        self._embd_rows = None  # a batch of input embeddings (images), made on first use

    def _apply_loras(self, ctx: Any) -> None:
        if not self._loras:
            return
        n = len(self._loras)
        adapters = (lc.llama_adapter_lora_p_ctypes * n)(*self._loras)
        scales = (ctypes.c_float * n)(*([1.0] * n))
        if lc.llama_set_adapters_lora(ctx, adapters, n, scales) != 0:
            raise LoadError("unable to apply the LoRA adapters to the context")

    # --- text -----------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n = len(data) + 8
        buf = (lc.llama_token * n)()
        got = lc.llama_tokenize(self.vocab, data, len(data), buf, n, add_special, parse_special)
        if got < 0:
            n = -got
            buf = (lc.llama_token * n)()
            got = lc.llama_tokenize(self.vocab, data, len(data), buf, n, add_special, parse_special)
        return list(buf[:got])

    def piece(self, token: int, special: bool = False) -> bytes:
        n = lc.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            return buf.raw[:n]
        return self._piece.raw[:n]

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) fill-in-the-middle tokens, or None when the model has none."""
        ids = (lc.llama_vocab_fim_pre(self.vocab), lc.llama_vocab_fim_suf(self.vocab),
               lc.llama_vocab_fim_mid(self.vocab))
        return None if any(t < 0 for t in ids) else ids  # type: ignore[return-value]

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    # --- decoding -------------------------------------------------------------------------
    def decode(self, rows: list[tuple[int, int, int, bool]]) -> int:
        """Decode one batch of (token, pos, seq_id, want_logits) rows: 0 ok, 1 no KV room, <0 error."""
        b = self._batch
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(rows)
        return self._decode(self.ctx, b)

    def decode_embd(self, embd: Any, pos: int, seq: int, logits_last: bool, non_causal: bool = False) -> int:
        """Decode rows of input embeddings (an image's, a float32 array of n x n_embd) at positions
        pos.. of `seq`: 0 ok, 1 no KV room, <0 error. A batch holds tokens or embeddings, never
        both, so this is a decode call of its own; a non-causal projector's image goes in at once."""
        import numpy as np  # comes with llama-cpp-python

        n = int(embd.shape[0])
        if self._embd_rows is None:
            self._embd_rows = lc.llama_batch_init(self.n_batch, self.n_embd, 1)
        if non_causal and n > self.n_batch:
            return -3
        b = self._embd_rows
        if non_causal:
            lc.llama_set_causal_attn(self.ctx, False)
        try:
            for start in range(0, n, self.n_batch):
                part = np.ascontiguousarray(embd[start:start + self.n_batch], dtype=np.float32)
                m = part.shape[0]
                ctypes.memmove(b.embd, part.ctypes.data, part.nbytes)
                for i in range(m):
                    b.pos[i] = pos + start + i
                    b.n_seq_id[i] = 1
                    b.seq_id[i][0] = seq
                    b.logits[i] = logits_last and start + i == n - 1
                b.n_tokens = m
                ret = self._decode(self.ctx, b)
                if ret != 0:
                    return ret
            return 0
        finally:
            if non_causal:
                lc.llama_set_causal_attn(self.ctx, True)

    def _decode(self, ctx: Any, batch: Any) -> int:
        """llama_decode, with this step's share of the cores when other runners are busy too."""
        share = self.share
        if share is None:
            return int(lc.llama_decode(ctx, batch))
        n = share.begin()
        if n != self.threads:
            self.threads = n
            lc.llama_set_n_threads(self.ctx, n, n)
            for ctx_ in (self._embd_ctx, self._rank_ctx):
                if ctx_:
                    lc.llama_set_n_threads(ctx_, n, n)
        try:
            return int(lc.llama_decode(ctx, batch))
        finally:
            share.end()

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        lc.llama_memory_seq_rm(self.mem, seq, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        lc.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def copy_prefix(self, src: int, dst: int, n: int) -> bool:
        """Make `dst` hold what `src` holds at positions [0, n) (its old cells are dropped). A
        unified cache shares the cells. With a KV stream per sequence the cells are copied through
        llama.cpp's sequence state, at a cost that follows the cells `src` holds (a few hundred KB for
        a short prompt here) where llama_memory_seq_cp copies the whole stream; one too big to pass
        through host memory is copied that way. False (and `dst` empty) if llama.cpp refused."""
        self.seq_rm(dst)
        if self.kv_unified:
            self.seq_cp(src, dst, 0, n)
            return True
        size = int(lc.llama_state_seq_get_size(self.ctx, src))
        if size > STATE_COPY_MAX:
            self.seq_cp(src, dst)  # the whole stream, on the device
        else:
            buf = (ctypes.c_uint8 * size).from_buffer(bytearray(size))
            got = lc.llama_state_seq_get_data(self.ctx, buf, size, src)
            if not got or lc.llama_state_seq_set_data(self.ctx, buf, got, dst) != got:
                self.seq_rm(dst)
                return False
        self.seq_rm(dst, n, -1)
        return True

    def seq_add(self, seq: int, p0: int, p1: int, delta: int) -> None:
        """Move the positions of `seq`'s cells in [p0, p1) by `delta` (a context shift)."""
        lc.llama_memory_seq_add(self.mem, seq, p0, p1, delta)

    @property
    def can_shift(self) -> bool:
        return bool(lc.llama_memory_can_shift(self.mem))

    def logprobs(self, row: int, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        """The model's own log-probability of `token` at batch row `row` (before any sampler), and
        the `top` most likely tokens with theirs."""
        import numpy as np  # comes with llama-cpp-python

        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))
        peak = float(logits.max())
        lse = peak + float(np.log(np.exp(logits - peak).sum()))
        best: list[tuple[int, float]] = []
        if top > 0:
            ids = np.argpartition(-logits, top)[:top]
            best = sorted(((int(i), float(logits[i]) - lse) for i in ids), key=lambda x: -x[1])
        return float(logits[token]) - lse, best

    def _logits_view(self, row: int) -> Any:
        import numpy as np  # comes with llama-cpp-python

        return np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))

    def logits(self, row: int) -> Any:
        """A copy of batch row `row`'s logits (a numpy array of n_vocab floats)."""
        return self._logits_view(row).copy()

    def argmax(self, row: int) -> int:
        """The most likely token at batch row `row` (greedy, before any sampler)."""
        return int(self._logits_view(row).argmax())

    # --- embeddings -----------------------------------------------------------------------
    def _pooled_context(self, pooling: int):
        """A context on the same weights that pools each sequence (embeddings: `pooling` may be
        UNSPECIFIED, the model's own; rank: llama.cpp's classification head)."""
        cp = lc.llama_context_default_params()
        cp.n_ctx = self.seq_ctx
        cp.n_batch = cp.n_ubatch = self.seq_ctx
        cp.n_seq_max = EMBED_SEQS
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.embeddings = True
        cp.pooling_type = pooling
        ctx = lc.llama_init_from_model(self.model, cp)
        if not ctx:
            raise LoadError("unable to create an embedding context")
        return ctx

    def _embedding_context(self):
        """The embedding context: the model's own pooling, or mean pooling for a generative model."""
        if self._embd_ctx is None:
            ctx = self._pooled_context(lc.LLAMA_POOLING_TYPE_UNSPECIFIED)
            if lc.llama_pooling_type(ctx) == lc.LLAMA_POOLING_TYPE_RANK:
                lc.llama_free(ctx)  # its pooled output is a score, not a vector
                raise ValueError("this model is a reranker: it scores query/document pairs (/api/rerank), "
                                 "it has no embeddings")
            if lc.llama_pooling_type(ctx) == lc.LLAMA_POOLING_TYPE_NONE:
                lc.llama_free(ctx)
                ctx = self._pooled_context(lc.LLAMA_POOLING_TYPE_MEAN)
            self._apply_loras(ctx)
            self._embd_ctx = ctx
            self._embd_batch = self._embd_batch or lc.llama_batch_init(self.seq_ctx, 0, 1)
        return self._embd_ctx

    def _rank_context(self):
        if self._rank_ctx is None:
            self._rank_ctx = self._pooled_context(lc.LLAMA_POOLING_TYPE_RANK)
            self._embd_batch = self._embd_batch or lc.llama_batch_init(self.seq_ctx, 0, 1)
        return self._rank_ctx

    def _pool(self, ctx: Any, inputs: list[list[int]], width: int) -> list[list[float]]:
        """Decode the inputs, several sequences per batch, and read each one's pooled output
        (`width` floats of it)."""
        mem = lc.llama_get_memory(ctx)
        out: list[list[float]] = []
        i = 0
        while i < len(inputs):
            group: list[list[int]] = []
            used = 0
            while i < len(inputs) and len(group) < EMBED_SEQS and used + len(inputs[i]) <= self.seq_ctx:
                group.append(inputs[i])
                used += len(inputs[i])
                i += 1
            if not group:
                raise ValueError("the input length exceeds the context length")
            b = self._embd_batch
            n = 0
            for seq, toks in enumerate(group):
                for pos, tok in enumerate(toks):
                    b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, True
                    b.seq_id[n][0] = seq
                    n += 1
            b.n_tokens = n
            lc.llama_memory_clear(mem, True)
            if self._decode(ctx, b) != 0:
                raise RuntimeError("llama_decode failed while pooling")
            for seq in range(len(group)):
                ptr = lc.llama_get_embeddings_seq(ctx, seq)
                if not ptr:
                    raise RuntimeError("llama.cpp returned no pooled output")
                out.append([float(x) for x in ptr[:width]])
        return out

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """Pooled embeddings (not normalised), several inputs per decode."""
        return self._pool(self._embedding_context(), inputs, self.n_embd)

    # --- reranking ------------------------------------------------------------------------
    def rank(self, inputs: list[list[int]]) -> list[float]:
        """One relevance score per (query, document) token list: llama.cpp's rank pooling, i.e. the
        model's classification head over its pooled state; the first output of the head, as
        llama-server reports it."""
        return [v[0] for v in self._pool(self._rank_context(), inputs, 1)]

    def rerank_tokens(self, query: str, document: str) -> list[int]:
        """A query/document pair as llama-server formats it for a reranker: the model's rerank
        template (`tokenizer.chat_template.rerank`, with {query} and {document}) when it has one,
        else [BOS] query [EOS] [SEP] document [EOS], each special only where the vocabulary adds it
        (SEP standing in for a missing EOS)."""
        if self._rerank_template is None:
            raw = lc.llama_model_chat_template(self.model, b"rerank")
            self._rerank_template = raw.decode("utf-8", "replace") if raw else ""
        if self._rerank_template:
            text = self._rerank_template.replace("{query}", query).replace("{document}", document)
            return self.tokenize(text, add_special=False, parse_special=True)
        v = self.vocab
        eos = lc.llama_vocab_eos(v)
        if eos < 0:
            eos = lc.llama_vocab_sep(v)
        add_eos = bool(lc.llama_vocab_get_add_eos(v)) and eos >= 0
        out = [lc.llama_vocab_bos(v)] if self.add_bos else []
        out += self.tokenize(query, add_special=False)
        if add_eos:
            out.append(eos)
        if lc.llama_vocab_get_add_sep(v) and lc.llama_vocab_sep(v) >= 0:
            out.append(lc.llama_vocab_sep(v))
        out += self.tokenize(document, add_special=False)
        if add_eos:
            out.append(eos)
        return out

    def check_grammar(self, grammar: str) -> None:
        """ValueError when llama.cpp cannot parse `grammar` (checked before a request is admitted,
        so a bad one is the sender's 400, not an error in the middle of its stream)."""
        g = lc.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
        if not g:
            raise ValueError("invalid format: llama.cpp cannot build a grammar from it")
        lc.llama_sampler_free(g)

    def sampler(self, opts: dict[str, Any], grammar: str | None = None,
                history: list[int] | tuple[int, ...] = ()) -> Sampler:
        """A sampler chain for one sequence; `history` (the prompt) feeds the repetition penalties."""
        return Sampler(self, opts, grammar, history)

    def close(self) -> None:
        if self._embd_batch is not None:
            lc.llama_batch_free(self._embd_batch)
            self._embd_batch = None
        for attr in ("_embd_ctx", "_rank_ctx"):
            if getattr(self, attr):
                lc.llama_free(getattr(self, attr))
                setattr(self, attr, None)
        if self._embd_rows is not None:
            lc.llama_batch_free(self._embd_rows)
            self._embd_rows = None
        if self._batch is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None


def quantize(src: str, dst: str, ftype: int, threads: int = 0, allow_requantize: bool = False) -> None:
    """llama.cpp's llama_model_quantize: `src` GGUF to `dst` with weights of llama_ftype `ftype`
    (general.file_type's numbering). It logs one line per tensor (`[  i/  n] name ...`) to stderr."""
    registry()  # the backends are loaded before any model
    p = lc.llama_model_quantize_default_params()
    p.nthread = threads
    p.ftype = ftype
    p.allow_requantize = allow_requantize
    if lc.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) != 0:
        raise LoadError(f"llama.cpp could not quantize {src}")
