#!/usr/bin/env bash
# Build (once) a separate venv running llama.cpp's OpenAI server, for the third-party server
# test (tests/test_remote_llamacpp.py). Idempotent: a second run only checks the stamp.
#
# PyPI has only the source package of llama-cpp-python 0.3.36 (~5 min to build on 2 cores),
# and the default native build segfaults on AMX CPUs, so the wheel is built ONCE with portable
# CMAKE_ARGS into a cache folder outside the repository (never committed) and installed
# into its own venv: the server's dependencies (sse-starlette, starlette-context, ...) stay
# out of bbx's venv.
#
# Prints the venv's python on success. On failure writes the reason to $ROOT/FAILED (the test
# skips with it) and exits non-zero.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/llama_common.sh"  # VERSION, CACHE, PY, fail, ...
ROOT="$CACHE/llama-cpp-python-$VERSION"
VENV="$ROOT/venv"
WHEELS="$ROOT/wheels"
STAMP="$VENV/.bbx-ready"
if [[ -f "$STAMP" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
llama_begin
mkdir -p "$WHEELS"
export CMAKE_ARGS="${GGML_PORTABLE[*]}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  command -v cmake >/dev/null || command -v gcc >/dev/null || fail "no C/C++ toolchain (cmake, gcc) to build llama-cpp-python"
  "$PY" -m pip wheel -q --no-deps --no-binary llama-cpp-python -w "$WHEELS" \
    "llama-cpp-python==$VERSION" >"$ROOT/build.log" 2>&1 \
    || fail "building llama-cpp-python==$VERSION failed (log: $ROOT/build.log)"
fi
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV" || fail "could not create $VENV"
"$VENV/bin/python" -m pip install -q --find-links "$WHEELS" "llama-cpp-python[server]==$VERSION" \
  >"$ROOT/install.log" 2>&1 || fail "installing the server's dependencies failed (log: $ROOT/install.log)"
"$VENV/bin/python" -c "import llama_cpp.server" || fail "llama_cpp.server does not import"
touch "$STAMP"
echo "$VENV/bin/python"
