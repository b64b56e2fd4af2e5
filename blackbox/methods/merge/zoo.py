"""The adapter repository Evo-Merging searches over, built here: PEFT LoRA adapters fine-tuned
on source tasks, on CPU, in minutes each.

No adapter zoo can be downloaded on this machine, so :func:`build_zoo` trains one. Every
adapter is LoRA r=8, lora_alpha=16 on all seven projections of each decoder layer (q, k, v,
o, gate, up, down; as the paper's pool), trained as a causal LM on **the label word after the
task template** — exactly the next-token read that the merge loss scores — so an adapter is
a "model for its task" in the same prompt format a user of the target task sends.

Held out of the zoo: ``sst-2`` and ``trec``, the merge targets: never their test splits, nor
the train/dev files the merge grid's seeds draw user examples from.
``mr`` is a source task but only in a *variant* (another template, other label words): an
``mr`` adapter in sst-2's own template and words would be sst-2 in all but name.

Source data: the few-shot folders hold only 16-shot train/dev splits and full test sets, so
source adapters train on their source tasks' test sets (those tasks are never scored in the
merge table) and BBC News on its non-test part. **Leak check**: those files share texts
with the targets (every SST-2 test sentence is in SST-5's test file, 429 are in MR's), so
before training, every source text equal (after :func:`~blackbox.data.leak.normalize`) to a
merge target's test text or user example (the targets' train/dev files) is dropped, and the
count is printed and recorded. Each adapter keeps the digests of the texts it trained on
(``bbx_train.json``), so a merge run checks them against its own test and user examples.

Building is idempotent (an adapter whose folder is complete is skipped) and atomic (each is
written to a temporary folder and renamed into place); each adapter is seeded from the zoo
seed and its name. torch / peft are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HELD_OUT = ("sst-2", "trec")  # merge targets: no adapter ever trains on them


@dataclass(frozen=True)
class AdapterSpec:
    """One zoo adapter: a source task, which of its templates, optional other label words,
    and where its texts come from: the source task's test split (BBC News: its pool), or,
    with ``seeds``, the 16-shot train and dev files of those seeds (the only way a merge
    target's own kind of data enters the zoo: files its grid seeds never draw from)."""

    name: str
    task: str
    template: int = 0
    label_words: tuple[str, ...] | None = None  # None: the task's own verbalizer
    seeds: tuple[int, ...] | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (for the zoo manifest)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


#: The merge grid's seeds: their user examples (train/dev files) never enter the zoo.
MERGE_SEEDS = (13, 42, 87)

#: The default zoo: 12 adapters. Related to sst-2 (sentiment): four, on MR's test set and
#: SST-5's few-shot files (SST's train split), in other templates and words. Related to trec
#: (question type): two, on TREC's 16-shot files of seeds 21 and 100 (TREC's train split).
#: Unrelated: AG News and BBC News variants. Every source text equal to a target's test
#: text or grid user example is dropped before training (see the module docstring).
DEFAULT_ZOO: tuple[AdapterSpec, ...] = (
    AdapterSpec("mr-t1-goodbad", "mr", 1, (" bad", " good")),
    AdapterSpec("mr-t2-noyes", "mr", 2, (" No", " Yes")),
    AdapterSpec("mr-t0-terriblegreat", "mr", 0, (" terrible", " great")),
    AdapterSpec("sst5-t0", "sst-5", 0, None, (13, 21, 42, 87, 100)),
    AdapterSpec("sst5-t2", "sst-5", 2, None, (13, 21, 42, 87, 100)),
    AdapterSpec("trec21-t1", "trec", 1, None, (21,)),
    AdapterSpec("trec100-t2-lower", "trec", 2, (" description", " entity", " expression",
                                                " person", " place", " number"), (100,)),
    AdapterSpec("agnews-t0", "agnews", 0),
    AdapterSpec("agnews-t2", "agnews", 2),
    AdapterSpec("agnews-t1-lower", "agnews", 1, (" world", " sports", " business",
                                                 " technology")),
    AdapterSpec("bbc-t0", "bbc-news", 0),
    AdapterSpec("bbc-t1", "bbc-news", 1),
)


@dataclass
class TrainConfig:
    """How each adapter is trained: 100 steps of 8 sequences (~64 tokens), AdamW with warm-up
    and linear decay. Measured here: 3.5-10 s per step on the shared 2-core CPU (the issue measured
    1.1 s on an idle one)."""

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    max_words: int = 40  # input text cut to this many words (keeps sequences ~64 tokens)
    max_tokens: int = 96
    rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    seed: int = 0
    target_modules: tuple[str, ...] = field(default=TARGET_MODULES)


def default_zoo_dir(model: str = "default") -> Path:
    """``<cache>/zoo/<model name>``: where the zoo goes unless told otherwise."""
    from blackbox.engine.loader import resolve_spec
    from blackbox.paths import zoo_dir

    return zoo_dir(resolve_spec(model).name)


def is_built(folder: Path) -> bool:
    """Whether ``folder`` holds a complete PEFT adapter."""
    return ((folder / "adapter_config.json").is_file()
            and (folder / "adapter_model.safetensors").is_file()
            and (folder / "bbx_train.json").is_file()
            # adapters built before the leak check recorded no digests: they are rebuilt
            and (folder / "bbx_text_digests.json").is_file())


def _seed_of(base: int, name: str) -> int:
    return (base * 1_000_003 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)) % 2**31


def target_texts(targets: tuple[str, ...] = HELD_OUT) -> dict[str, list[str]]:
    """The texts no adapter may train on: each merge target's test split and the train/dev
    files its user examples are drawn from (every shipped seed)."""
    from blackbox.data import get_task, load_split

    out: dict[str, list[str]] = {}
    for name in targets:
        task = get_task(name)
        out[f"{name} test"] = [e.text for e in load_split(task, "test")]
        out[f"{name} user examples"] = [e.text for seed in MERGE_SEEDS
                                        for split in ("train", "dev")
                                        for e in load_split(task, split, 16, seed)]
    return out


def training_examples(spec: AdapterSpec, cfg: TrainConfig,
                      exclude: dict[str, list[str]] | None = None
                      ) -> tuple[list[tuple[str, str]], list[str], dict[str, int]]:
    """(prompt, label word) pairs of the adapter's source data in the merge's prompt format,
    the texts they come from, and how many source texts each ``exclude`` set removed."""
    from blackbox.data import get_task, load_split
    from blackbox.data.leak import normalize
    from blackbox.data.tasks import render

    if spec.task in HELD_OUT and not spec.seeds:
        raise BbxError(f"adapter '{spec.name}' trains on the test split of '{spec.task}', a "
                       "held-out merge target: pick another source task, or few-shot files "
                       f"(seeds other than {', '.join(map(str, MERGE_SEEDS))})")
    task = get_task(spec.task)
    words = spec.label_words or task.label_words
    if len(words) != task.n_classes:
        raise BbxError(f"adapter '{spec.name}': {len(words)} label words for "
                       f"{task.n_classes} classes")
    if spec.seeds:
        examples = [e for seed in spec.seeds for split in ("train", "dev")
                    for e in load_split(task, split, 16, seed)]
    else:
        examples = load_split(task, "pool" if task.source == "bbc" else "test")
    dropped: dict[str, int] = {}
    for name, texts in (exclude or {}).items():
        keys = {normalize(t) for t in texts}
        kept = [e for e in examples if normalize(e.text) not in keys]
        dropped[name] = len(examples) - len(kept)
        examples = kept
    max_words = min(cfg.max_words, task.max_words or cfg.max_words)
    template = task.templates[spec.template]
    pairs = [(render(template, e.text, max_words=max_words), words[e.label]) for e in examples]
    return pairs, [e.text for e in examples], dropped


def _encode(tokenizer: Any, pairs: list[tuple[str, str]], max_tokens: int
            ) -> list[tuple[list[int], int]]:
    """Token ids of prompt + label word, and how many trailing tokens are the label word.

    The prompt is tokenized with special tokens and the word without, separately, exactly as
    the engine's ``label_logprobs`` reads them.
    """
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    words = tokenizer([w for _, w in pairs], add_special_tokens=False)["input_ids"]
    out = []
    for p, w in zip(prompts, words, strict=True):
        ids = list(p) + list(w)
        if len(ids) <= max_tokens:
            out.append((ids, len(w)))
    return out


def train_adapter(spec: AdapterSpec, model_folder: Path, out: Path, cfg: TrainConfig,
                  log: Any = None, exclude: dict[str, list[str]] | None = None
                  ) -> dict[str, Any]:
    """Fine-tune one LoRA adapter and save it (PEFT format) to ``out``; returns its record.

    Source texts in ``exclude`` (name -> texts) are dropped first (see the module docstring).
    """
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from blackbox.data.leak import digests

    seed = _seed_of(cfg.seed, spec.name)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok = AutoTokenizer.from_pretrained(model_folder, local_files_only=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    pairs, texts, dropped = training_examples(spec, cfg, exclude)
    if log is not None:
        log(f"  {spec.name}: leak check: {len(texts)} source texts kept; dropped as merge-target "
            "texts: " + (", ".join(f"{n} {c}" for n, c in dropped.items()) or "none checked"))
    data = _encode(tok, pairs, cfg.max_tokens)
    if not data:
        raise BbxError(f"adapter '{spec.name}': no training example fits {cfg.max_tokens} tokens")
    base = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32,
                                                local_files_only=True)
    model = get_peft_model(base, LoraConfig(
        r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / cfg.steps))
    order = rng.permutation(len(data))
    t0, losses = time.perf_counter(), []
    for step in range(cfg.steps):
        idx = [order[(step * cfg.batch_size + j) % len(order)] for j in range(cfg.batch_size)]
        batch = [data[i] for i in idx]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for r, (seq, n_word) in enumerate(batch):  # left-pad, as the engine does
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
            labels[r, width - n_word:] = torch.tensor(seq[-n_word:])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        loss = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % 25 == 0:
            log(f"  {spec.name}: step {step + 1}/{cfg.steps}  loss "
                f"{np.mean(losses[-25:]):.3f}  {time.perf_counter() - t0:.0f}s")
    # a dot-name: the adapter repository never lists it while it is being written
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    record = {"spec": spec.describe(), "train": {**asdict(cfg), "seed": seed},
              "examples": len(data), "dropped_as_target_texts": dropped,
              "first_loss": float(np.mean(losses[:10])),
              "final_loss": float(np.mean(losses[-25:])),
              "seconds": round(time.perf_counter() - t0, 1)}
    (tmp / "bbx_train.json").write_text(json.dumps(record, indent=2) + "\n")
    # what the merge-time leak guard reads: digests of the texts, never the texts
    (tmp / "bbx_text_digests.json").write_text(json.dumps(digests(texts)) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # atomic: a killed build never leaves a half-written adapter
    return record


def build_zoo(folder: str | Path | None = None, model: str = "default",
              specs: tuple[AdapterSpec, ...] = DEFAULT_ZOO, cfg: TrainConfig | None = None,
              only: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Build (or complete) the zoo in ``folder`` (default :func:`default_zoo_dir`).

    Adapters already built are skipped; ``only`` restricts the build to some names. Writes
    ``zoo.json`` (specs, training settings, losses) next to the adapters and returns it.
    """
    from blackbox.engine.loader import convert_gguf, resolve_spec

    cfg = cfg or TrainConfig()
    root = Path(folder).expanduser() if folder is not None else default_zoo_dir(model)
    root.mkdir(parents=True, exist_ok=True)
    source = resolve_spec(model)
    model_folder = convert_gguf(source) if source.kind == "gguf" else source.path
    names = [s.name for s in specs]
    for n in only or []:
        if n not in names:
            from blackbox.errors import did_you_mean

            raise BbxError(f"unknown zoo adapter '{n}'{did_you_mean(n, names)}")
    from blackbox.progress import Stages

    log = Stages("zoo build", enabled=progress).note if progress else None
    exclude = target_texts()
    manifest_path = root / "zoo.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    adapters = manifest.get("adapters", {})
    for i, spec in enumerate(specs):
        if only and spec.name not in only:
            continue
        out = root / spec.name
        if is_built(out):
            if log:
                log(f"[{i + 1}/{len(specs)}] {spec.name}: built, skipped")
            adapters.setdefault(spec.name, json.loads((out / "bbx_train.json").read_text()))
            continue
        if log:
            log(f"[{i + 1}/{len(specs)}] {spec.name}: training on {spec.task} "
                f"(template {spec.template}), {cfg.steps} steps")
        adapters[spec.name] = train_adapter(spec, Path(model_folder), out, cfg, log, exclude)
        _write_manifest(manifest_path, source.name, adapters)  # after each: builds get killed
    manifest = _write_manifest(manifest_path, source.name, adapters)
    return {"folder": str(root), **manifest}


def training_digests(folder: Path) -> list[str] | None:
    """The digests of the texts the adapter in ``folder`` trained on (None: not recorded)."""
    f = folder / "bbx_text_digests.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _write_manifest(path: Path, model: str, adapters: dict[str, Any]) -> dict[str, Any]:
    manifest = {"model": model, "held_out": list(HELD_OUT), "adapters": adapters}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
