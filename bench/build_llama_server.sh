#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the llama.cpp sources vendored in llama-cpp-python's sdist
# on PyPI (the only registry these machines reach), with the same portable CPU flags install.sh uses.
# Output: ~/.cache/ollamalike/llama-server-<version>/bin/llama-server (outside the repository, so a
# clean clone -- CI included -- builds it once per machine; OLLAMALIKE_LLAMA_SERVER_CACHE moves it).
# Prints the executable's path on its last line. About 5-10 minutes on 2 cores the first time.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${OLLAMALIKE_LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ollamalike}"
OUT="$CACHE/llama-server-$VERSION"
if [ -x "$OUT/bin/llama-server" ]; then echo "$OUT/bin/llama-server"; exit 0; fi
command -v cmake >/dev/null || { echo "cmake not found: install cmake to build llama-server" >&2; exit 2; }
command -v c++ >/dev/null || { echo "no C++ compiler (c++) found: install g++ or clang" >&2; exit 2; }
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
# Build in a scratch folder beside the cache entry, publish by rename: an interrupted build leaves no
# half-written executable behind, and two concurrent builds do not share a build tree.
WORK="$(mktemp -d "$CACHE/.build-$VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d src 2>/dev/null
tar -xzf src/llama_cpp_python-"$VERSION".tar.gz -C src
SRC="$WORK/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
have="$(grep -m1 '^flags' /proc/cpuinfo || true)"
args="-DGGML_NATIVE=OFF"
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512_vnni:AVX512_VNNI \
            avx512_bf16:AVX512_BF16 avx512vbmi:AVX512_VBMI; do
  if [[ " $have " == *" ${pair%%:*} "* ]]; then args="$args -DGGML_${pair#*:}=ON"; fi
done
# shellcheck disable=SC2086
cmake -S "$SRC" -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF $args >/dev/null
cmake --build build --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$OUT/bin"
cp build/bin/llama-server "$OUT/bin/llama-server.tmp"
mv "$OUT/bin/llama-server.tmp" "$OUT/bin/llama-server"
echo "$OUT/bin/llama-server"
