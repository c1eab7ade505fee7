#!/usr/bin/env bash
# Build the single executable dist/ollamalike-<os>-<arch> with PyInstaller, from the virtual
# environment that ./install.sh made (its llama-cpp-python build, and so its backend, is the one
# bundled). Installs the `build` extra (PyInstaller) into that environment when missing.
#
#   build/build.sh            build (a few minutes)
#   dist/ollamalike-linux-x86_64 --version
#
# Settings: VENV (default .venv beside this checkout's install.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "build.sh: no virtual environment at $VENV; run ./install.sh first" >&2
  exit 1
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
  echo ">>> installing PyInstaller (the build extra)"
  "$PY" -m pip install --disable-pip-version-check -q "pyinstaller>=6.10"
fi
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
arch="$(uname -m)"
name="ollamalike-$os-$arch"
echo ">>> building dist/$name"
start=$(date +%s)
cd "$ROOT"
OLLAMALIKE_BINARY_NAME="$name" "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$ROOT/dist" --workpath "$ROOT/build/build" "$ROOT/build/ollamalike.spec"
"$ROOT/dist/$name" --version
echo ">>> built dist/$name ($(du -h "$ROOT/dist/$name" | cut -f1), $(( $(date +%s) - start )) s)"
if [ "$os" = linux ]; then  # the newest glibc symbol version any bundled library asks for
  glibc="$(xargs -a "$ROOT/build/build/ollamalike/binaries.txt" objdump -T 2>/dev/null \
           | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n1 || true)"
  echo ">>> it needs glibc ${glibc#GLIBC_} or newer (objdump -T; built with $(ldd --version | head -n1))"
fi
