"""Builders shared by the serve / remote / adapter tests: a tiny random Llama with a tiny BPE
tokenizer (and a chat template), a tiny zoo of PEFT LoRA adapters made with ``peft`` on it,
a uvicorn server run in a background thread on a free loopback port, and ``bbx serve`` run
as a user runs it (a subprocess of the CLI).

Imported by the test modules (``tests/`` is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CORPUS = [
    "the movie was great and the acting was good",
    "the plot was bad and the film was boring",
    "a positive review says good things",
    "a negative review says bad things",
    "positive positive negative negative great good bad",
    "I loved it, I hated it, it was fine, it was okay",
    "user: hello assistant: hi there, how can I help",
]
PROMPTS = [
    "the movie was",
    "a review: the film was boring and bad. Sentiment:",
    "I loved it",
    "x",
    "the acting was good and the plot was great, a positive review. Overall it was",
    "okay",
    "",
]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
# (name, rank, lora_alpha, target modules)
ZOO = [
    ("sst2", 4, 8, ["q_proj", "v_proj"]),
    ("trec", 4, 8, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                    "down_proj"]),
    ("news", 2, 4, ["v_proj", "down_proj"]),
]


def build_tiny_model(folder: Path, context: int = 96, hidden: int = 32) -> Path:
    """A 2-layer random Llama with a 320-token BPE tokenizer, saved in ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 10, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def build_zoo(model_folder: Path, zoo: Path, scale: float = 0.5) -> Path:
    """PEFT LoRA adapters (random, non-zero A and B) on the tiny model, one folder each."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for seed, (name, r, alpha, targets) in enumerate(ZOO):
        base = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
        torch.manual_seed(100 + seed)
        peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha,
                                                     target_modules=targets,
                                                     init_lora_weights=False))
        with torch.no_grad():
            for pname, p in peft_model.named_parameters():
                if "lora_" in pname:
                    p.copy_(torch.randn_like(p) * scale)
        peft_model.save_pretrained(zoo / name)
        # random weights, trained on no text: the merge leak guard has nothing to flag
        (zoo / name / "bbx_text_digests.json").write_text("[]\n")
    return zoo


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread; yields its ``/v1`` base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def process_server(cmd: list[str], ready_path: str, name: str, port: int,
                   ready_s: float = 180.0, cwd: Path | None = None,
                   env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a server command (bound to 127.0.0.1:``port``) in a subprocess, with ``env`` on
    top of this process's environment; yield its root URL once ``ready_path`` answers 200,
    and stop it after. A server that exits or does not answer within ``ready_s`` is an error
    carrying the tail of its log. (The benchmark scripts start servers with it too.)"""
    import httpx2

    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe blocks the server
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + ready_s
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{name} did not start:\n"
                                       + log.read().decode(errors="replace")[-3000:])
                with contextlib.suppress(httpx2.HTTPError):  # e.g. 503 while loading
                    if httpx2.get(root + ready_path, timeout=5).status_code == 200:
                        break
                time.sleep(0.25)
            yield root
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@contextlib.contextmanager
def cli_server(*args: str, ready_s: float = 600.0) -> Iterator[str]:
    """Run ``bbx serve --port P *args`` in a subprocess, as a user starts it; yields its
    ``/v1`` base URL once ``/health`` answers, and stops the server after."""
    port = free_port()
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "blackbox.cli.main", "serve", "--port", str(port),
           "--log-level", "warning", *args]
    # ready_s: the first run converts the GGUF
    with process_server(cmd, "/health", "bbx serve", port, ready_s, cwd=repo) as root:
        yield root + "/v1"


def build_script(script: str) -> str:
    """The last line a build script under ``scripts/`` prints (the built thing's path),
    building it on first use (instant once built); a failed build is a ``RuntimeError``
    carrying the script's last line of stderr (its reason)."""
    res = subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "scripts" / script)],
                         capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "PYTHON": sys.executable})
    if res.returncode != 0:
        raise RuntimeError((res.stderr.strip().splitlines() or ["unknown reason"])[-1])
    return res.stdout.strip().splitlines()[-1]


def built(script: str, what: str) -> str:
    """:func:`build_script` for a test: the calling test is skipped, with the script's
    reason, when the build is impossible here."""
    import pytest

    try:
        return build_script(script)
    except RuntimeError as e:
        pytest.skip(f"{what} cannot be built here: {e}")
