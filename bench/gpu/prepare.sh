#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before the GPU call: packs what the GPU machine cannot fetch into
# bench/gpu/.carry (ignored by git, carried with `carry: ["bench/gpu/.carry"]`), well under the 64 MiB a
# call may carry:
#   llama.cpp.tar.gz   llama.cpp's sources from llama-cpp-python's sdist (the same version install.sh
#                      builds), trimmed of docs, model vocabularies, tests and other backends
#   llama_cpp_py.tar.gz  llama-cpp-python's Python package (its ctypes bindings), without libraries
#   whl/               wheels for Python 3.12 of what the GPU image lacks (pydantic, platformdirs, gguf...)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CARRY="$ROOT/bench/gpu/.carry"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PY="${PYTHON:-python3}"
mkdir -p "$CARRY/whl"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

"$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" 2>/dev/null
tar -xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp"
sd="$tmp/llama_cpp_python-$VERSION"
src="$sd/vendor/llama.cpp"
# what a CUDA build of the libraries, llama-server and mtmd does not read
rm -rf "$src"/{docs,models,media,tests,benches,gguf-py,conversion,pocs,.github} \
       "$src"/ggml/src/{ggml-sycl,ggml-opencl,ggml-hexagon,ggml-vulkan,ggml-metal,ggml-cann,ggml-musa,ggml-et,ggml-kompute,ggml-webgpu,ggml-zdnn}
mkdir -p "$src/tests" && echo "" > "$src/tests/CMakeLists.txt"
tar -czf "$CARRY/llama.cpp.tar.gz" -C "$sd/vendor" llama.cpp
tar -czf "$CARRY/llama_cpp_py.tar.gz" -C "$sd" --exclude='lib' --exclude='__pycache__' llama_cpp

# the GPU image has aiohttp, jinja2, typer, rich, numpy, huggingface-hub, matplotlib (device KINDS.md)
plat="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64"
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps $plat -d "$CARRY/whl" \
  "pydantic>=2.6,<3" "pydantic-core" "annotated-types" "typing-inspection" "platformdirs>=4" "diskcache" "gguf>=0.17"
# one pydantic-core: the one this pydantic pins
need="$(unzip -p "$CARRY"/whl/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p')"
for f in "$CARRY"/whl/pydantic_core-*.whl; do
  case "$f" in *"pydantic_core-$need-"*) ;; *) rm -f "$f"; "$PY" -m pip download --quiet --no-deps $plat -d "$CARRY/whl" "pydantic-core==$need" ;; esac
done
du -sh "$CARRY"
total=$(du -sb "$CARRY" | cut -f1)
if [ "$total" -gt $((56 * 1024 * 1024)) ]; then echo "prepare.sh: $CARRY is over 56 MiB" >&2; exit 1; fi
echo "ready: carry bench/gpu/.carry and run bench/gpu/run.sh on the GPU machine"
