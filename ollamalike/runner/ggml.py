"""ggml's backend registry through ctypes, as llama-cpp-python binds none of it.

llama.cpp is built with GGML_BACKEND_DL: every backend is a library of its own in llama_cpp/lib, the
CPU one in one variant per CPU generation (libggml-cpu-sse42.so ... libggml-cpu-icelake.so). This
module loads them from that folder (ggml scores each CPU variant against CPUID and keeps the best
one; a GPU backend whose driver is missing fails to load and is skipped), says which CPU variant and
devices came up, and hands out the RPC backend's entry points. It imports no llama_cpp: runner/llama.py
gives it the folder of the libraries llama_cpp loaded, and it talks to the very libggml instance those
libraries use (opened by soname).
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import sys
from typing import Any

DEV_CPU, DEV_GPU, DEV_IGPU = 0, 1, 2  # enum ggml_backend_dev_type
GPU_BACKENDS = ("cuda", "hip", "vulkan", "metal", "sycl", "musa", "opencl", "cann")

_vp, _size, _str = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
# (library, function, argument types, result type): the registry calls this runner makes
_PROTOTYPES = (
    ("ggml", "ggml_backend_load_all_from_path", [_str], None),
    ("ggml", "ggml_backend_reg_count", [], _size), ("ggml", "ggml_backend_reg_get", [_size], _vp),
    ("ggml", "ggml_backend_reg_by_name", [_str], _vp), ("ggml", "ggml_backend_register", [_vp], None),
    ("ggml", "ggml_backend_dev_count", [], _size), ("ggml", "ggml_backend_dev_get", [_size], _vp),
    ("ggml", "ggml_backend_dev_by_type", [ctypes.c_int], _vp),
    ("ggml-base", "ggml_backend_reg_name", [_vp], _str),
    ("ggml-base", "ggml_backend_reg_get_proc_address", [_vp, _str], _vp),
    ("ggml-base", "ggml_backend_reg_dev_count", [_vp], _size),
    ("ggml-base", "ggml_backend_reg_dev_get", [_vp, _size], _vp),
    ("ggml-base", "ggml_backend_dev_type", [_vp], ctypes.c_int),
    ("ggml-base", "ggml_backend_dev_name", [_vp], _str),
    ("ggml-base", "ggml_backend_dev_description", [_vp], _str),
)


def find_library(lib_dir: pathlib.Path, name: str) -> pathlib.Path | None:
    """The file of lib<name> in `lib_dir` named as llama.cpp's libraries ask for it: lib<name>.so.N,
    their DT_NEEDED name (a wheel holds .so, .so.N and .so.N.M.K as three copies, and a copy opened
    by another name would be a second ggml with a registry of its own); else .so, .dylib or .dll."""
    versioned = sorted(lib_dir.glob(f"lib{name}.so.*"), key=lambda p: len(p.name))
    if versioned:
        return versioned[0]
    for pattern in (f"lib{name}.so", f"lib{name}.dylib", f"{name}.dll"):
        for path in sorted(lib_dir.glob(pattern)):
            return path
    return None


def _open(lib_dir: pathlib.Path, name: str) -> ctypes.CDLL:
    """lib<name> as llama.cpp's libraries use it: the instance already loaded under its soname
    (wherever their run path found it), else the file in `lib_dir`."""
    path = find_library(lib_dir, name)
    if path is None:
        raise OSError(f"lib{name} is not in {lib_dir}")
    if hasattr(os, "RTLD_NOLOAD"):
        try:
            return ctypes.CDLL(path.name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            pass  # not loaded yet
    return ctypes.CDLL(str(path))


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", _str), ("dli_fbase", _vp), ("dli_sname", _str), ("dli_saddr", _vp)]


def library_of(address: int) -> str:
    """The file of the shared library holding `address` (dladdr), "" where that cannot be told."""
    if sys.platform == "win32" or not address:
        return ""
    libc = ctypes.CDLL(None)
    libc.dladdr.argtypes, libc.dladdr.restype = [_vp, ctypes.POINTER(_DlInfo)], ctypes.c_int
    info = _DlInfo()
    if libc.dladdr(address, ctypes.byref(info)) == 0 or not info.dli_fname:
        return ""
    return info.dli_fname.decode(errors="replace")


class Registry:
    """ggml's backend registry, as the functions of _PROTOTYPES (`reg_count`, `dev_get`, ...)."""

    def __init__(self, lib_dir: pathlib.Path) -> None:
        self.lib_dir = lib_dir
        libs = {lib: _open(lib_dir, lib) for lib in ("ggml", "ggml-base")}
        for lib, name, args, res in _PROTOTYPES:
            fn = getattr(libs[lib], name)
            fn.argtypes, fn.restype = args, res
            setattr(self, name.removeprefix("ggml_backend_"), fn)

    def load(self) -> None:
        """Load the backend libraries beside llama.cpp's, unless backends are registered already
        (a build without GGML_BACKEND_DL links them in). Call before any other llama.cpp call that
        would load them from its default places (the executable's folder, the working directory)."""
        if self.reg_count() == 0:
            self.load_all_from_path(str(self.lib_dir).encode())

    def names(self) -> list[str]:
        return [self.reg_name(self.reg_get(i)).decode() for i in range(self.reg_count())]

    def cpu_library(self) -> str:
        """The file the CPU backend came from, e.g. .../libggml-cpu-haswell.so ("" if unknown)."""
        reg = self.reg_by_name(b"CPU")
        return library_of(reg) if reg else ""

    def gpus(self) -> list[str]:
        """This machine's GPU devices: 'name (description)' each."""
        out = []
        for i in range(self.dev_count()):
            dev = self.dev_get(i)
            if self.dev_type(dev) in (DEV_GPU, DEV_IGPU):
                out.append(f"{self.dev_name(dev).decode()} ({self.dev_description(dev).decode()})")
        return out

    def gpu_libraries(self) -> list[str]:
        """GPU backend libraries shipped beside llama.cpp (whether or not they could load)."""
        return sorted(p.name for name in GPU_BACKENDS for p in self.lib_dir.glob(f"libggml-{name}*.so"))

    def proc(self, reg: int, name: str, ftype: Any) -> Any:
        """A backend's own function (`ggml_backend_rpc_add_server`, ...) as a ctypes function, or None."""
        addr = self.reg_get_proc_address(reg, name.encode())
        return ftype(addr) if addr else None


def cpu_variant(library: str) -> str:
    """'haswell' for .../libggml-cpu-haswell.so; 'single' for a build with one CPU backend."""
    stem = pathlib.Path(library).name.split(".so")[0].split(".dylib")[0]
    if stem.startswith("libggml-cpu-"):
        return stem.removeprefix("libggml-cpu-")
    return "single" if library else "unknown"
