#!/usr/bin/env bash
# Build (once) llama.cpp's own C++ OpenAI server, `llama-server` (the server Ollama and
# LM Studio build on), from the llama.cpp source vendored in the llama-cpp-python 0.3.36
# sdist on PyPI, into the user cache (never the repository). Idempotent: a second run only
# prints the binary's path. About 25 minutes on 2 busy cores.
#
# For the remote tests against llama-server (tests/test_remote_llama_server.py: `make test`
# runs this first, tolerating a failure, and the tests run it again, which is instant once
# built) and for serving benchmarks beside bbx serve. Portable flags as the wheel build uses
# (the native build segfaults on AMX CPUs); no curl (no downloads at run time).
#
# Prints the binary's path on success; on failure writes the reason to $ROOT/FAILED and to
# stderr (its last line: the tests skip with it) and exits non-zero.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/llama_common.sh"  # VERSION, CACHE, PY, fail, ...
ROOT="$CACHE/llama-server-$VERSION"
BIN="$ROOT/bin/llama-server"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
llama_begin
command -v cmake >/dev/null || fail "no cmake to build llama-server"
if ! ls "$ROOT"/llama_cpp_python-"$VERSION".tar.gz >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$ROOT" \
    "llama-cpp-python==$VERSION" >"$ROOT/download.log" 2>&1 \
    || fail "downloading the llama-cpp-python==$VERSION sdist failed (log: $ROOT/download.log)"
fi
SRC="$ROOT/src"
if [[ ! -d "$SRC/vendor/llama.cpp" ]]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar -xzf "$ROOT"/llama_cpp_python-"$VERSION".tar.gz -C "$SRC" --strip-components=1
fi
cmake -S "$SRC/vendor/llama.cpp" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  "${GGML_PORTABLE[@]}" -DBUILD_SHARED_LIBS=OFF \
  >"$ROOT/configure.log" 2>&1 || fail "configuring llama-server failed (log: $ROOT/configure.log)"
cmake --build "$ROOT/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  >"$ROOT/build.log" 2>&1 || fail "building llama-server failed (log: $ROOT/build.log)"
mkdir -p "$ROOT/bin"
cp "$ROOT/build/bin/llama-server" "$BIN"
echo "$BIN"
