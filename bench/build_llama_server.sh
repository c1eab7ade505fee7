#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the llama.cpp sources vendored in llama-cpp-python's sdist
# on PyPI (the only registry these machines reach), with the same portable CPU flags install.sh uses.
# Output: bench/.llama-server/bin/llama-server (ignored by git). About 5-10 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/.llama-server"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mkdir -p "$OUT"
if [ -x "$OUT/bin/llama-server" ]; then echo "$OUT/bin/llama-server"; exit 0; fi
cd "$OUT"
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d src 2>/dev/null
tar -xzf src/llama_cpp_python-"$VERSION".tar.gz -C src
SRC="$OUT/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
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
mkdir -p bin && cp build/bin/llama-server bin/
echo "$OUT/bin/llama-server"
