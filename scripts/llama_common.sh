# Sourced by scripts/llama_server_env.sh and scripts/llama_cpp_server_build.sh: the pinned
# llama-cpp-python version, the cache folder both build into (outside the repository), the
# portable CPU flags (the native build segfaults on AMX CPUs) and fail().
#
# The sourcing script sets ROOT (its folder under $CACHE), then calls llama_begin before its
# first step that can fail: fail REASON writes REASON to $ROOT/FAILED (the tests skip with
# it), prints it on stderr after the script's name, and exits non-zero.
VERSION=0.3.36
CACHE="${BBX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bbx}"
PY="${PYTHON:-python3}"
GGML_PORTABLE=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
               -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF)
LLAMA_SCRIPT="$(basename "$0" .sh)"

llama_begin() { mkdir -p "$ROOT"; rm -f "$ROOT/FAILED"; }
fail() { echo "$1" > "$ROOT/FAILED"; echo "$LLAMA_SCRIPT: $1" >&2; exit 1; }
