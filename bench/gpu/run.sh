#!/usr/bin/env bash
# The whole GPU benchmark in one call on the lent GPU machine (no network there): build llama.cpp with
# CUDA for the H200 (sm_90) once, as shared libraries for llama-cpp-python's bindings plus llama-server
# from the same sources; write a Llama-3.1-8B-shaped GGUF with random weights; sweep 1-64 clients for the
# raw batch API, ollamalike and llama-server (bench/throughput.py); results into $OUT (or bench/results).
#
# Here, first:  bench/gpu/prepare.sh
# Then one device call, carrying bench/gpu/.carry:
#   PYTHONUNBUFFERED=1 bash bench/gpu/run.sh 2>&1 | tee $OUT/log
# Rehearsal on a CPU (same steps, tiny model, CPU build):  bench/gpu/run.sh --rehearse
#
# Settings: GPU_WORK (build and model directory, default /tmp/ollamalike-gpu; a second call on a warm
# machine reuses the build), LEVELS (default 1,2,4,8,16,32,64), TOKENS (64), REQUESTS (2), SHAPE.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CARRY="$ROOT/bench/gpu/.carry"
WORK="${GPU_WORK:-/tmp/ollamalike-gpu}"
RESULTS="${OUT:-$ROOT/bench/results}"
LEVELS="${LEVELS:-1,2,4,8,16,32,64}"
TOKENS="${TOKENS:-64}"
REQUESTS="${REQUESTS:-2}"
MODE=cuda
SHAPE="${SHAPE:-llama3.1-8b}"
LABEL=h200
if [ "${1:-}" = "--rehearse" ]; then MODE=cpu; SHAPE="${SHAPE_REHEARSE:-tiny}"; LABEL=gpu-rehearsal-cpu
  LEVELS="${LEVELS_REHEARSE:-1,4}"; TOKENS=16; REQUESTS=1; WORK="${GPU_WORK:-/tmp/ollamalike-gpu-rehearsal}"; fi
PY="${PYTHON:-python3}"
if [ "$MODE" = cpu ] && [ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; fi
t0=$(date +%s)
say() { printf '[%4ds] %s\n' $(( $(date +%s) - t0 )) "$*"; }
[ -f "$CARRY/llama.cpp.tar.gz" ] || { echo "run.sh: $CARRY is missing: run bench/gpu/prepare.sh here first and carry it" >&2; exit 1; }
mkdir -p "$WORK" "$RESULTS"
if [ "$MODE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv || true; fi

# 1. Python packages the image lacks, and llama-cpp-python's bindings (libraries come from step 2)
site="$WORK/site"
if [ ! -d "$site/llama_cpp" ]; then
  mkdir -p "$site"
  if ! "$PY" -c "import pydantic, platformdirs, gguf, diskcache" 2>/dev/null; then
    say "python packages into $site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$CARRY"/whl/*.whl
  fi
  tar -xzf "$CARRY/llama_cpp_py.tar.gz" -C "$site"
fi
export PYTHONPATH="$ROOT:$site"

# 2. llama.cpp: shared libraries (for the bindings) and llama-server, one build
build="$WORK/build"
if [ ! -x "$build/bin/llama-server" ]; then
  say "building llama.cpp ($MODE)"
  rm -rf "$WORK/llama.cpp" && tar -xzf "$CARRY/llama.cpp.tar.gz" -C "$WORK"
  # the product's layout (install.sh): every backend a library the runner loads at start, CUDA one of
  # them; one CPU library for this machine's CPU (every variant would add minutes of device time)
  if [ "$MODE" = cuda ]; then flags="-DGGML_BACKEND_DL=ON -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON"
  else flags="-DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"; fi
  gen=""; if command -v ninja >/dev/null; then gen="-G Ninja"; fi
  # shellcheck disable=SC2086
  cmake -S "$WORK/llama.cpp" -B "$build" $gen -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON $flags > "$WORK/cmake.log" 2>&1 \
    || { tail -40 "$WORK/cmake.log"; exit 1; }
  targets="llama-server llama mtmd ggml-cpu"; if [ "$MODE" = cuda ]; then targets="$targets ggml-cuda"; fi
  # shellcheck disable=SC2086
  cmake --build "$build" --target $targets -j "$(nproc)" > "$WORK/build.log" 2>&1 \
    || { grep -m5 -B2 -A5 'error' "$WORK/build.log"; tail -20 "$WORK/build.log"; exit 1; }
  say "built"
fi
mkdir -p "$site/llama_cpp/lib"
find "$build" -name '*.so*' \( -type f -o -type l \) -exec cp -P {} "$site/llama_cpp/lib/" \;
"$PY" -m ollamalike --version  # the backends the runner loads: CUDA must be among them on the GPU machine
if [ "$MODE" = cuda ] && ! "$PY" -m ollamalike --version | grep -q 'backends: .*CUDA'; then
  echo "run.sh: the CUDA backend did not load (see the lines above)" >&2; exit 1
fi

# 3. the model: random weights in the real shape
model="$WORK/$SHAPE-random-q4_0.gguf"
if [ ! -s "$model" ]; then
  say "writing $model"
  "$PY" "$ROOT/bench/gpu/make_model.py" --shape "$SHAPE" --out "$model.tmp" && mv "$model.tmp" "$model"
fi

# 4. the sweep, every system side by side in this one run
gpu=0; threads="$(nproc)"
if [ "$MODE" = cuda ]; then gpu=999; threads=8; fi
say "sweep: levels $LEVELS, $TOKENS tokens, $REQUESTS requests per client"
"$PY" "$ROOT/bench/throughput.py" --model "$model" --systems raw,ollamalike,llama-server --levels "$LEVELS" \
  --tokens "$TOKENS" --requests "$REQUESTS" --repeats 1 --threads "$threads" --gpu-layers "$gpu" \
  --llama-server "$build/bin/llama-server" --label "$LABEL" --out "$RESULTS"
say "done: $(ls "$RESULTS" | grep -c "$LABEL") files in $RESULTS"
