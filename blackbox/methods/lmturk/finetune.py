"""A fine-tuned student: the bundled all-MiniLM-L6-v2 encoder trained end to end with a
linear head on the gold examples and the workers' labels.

The linear student over frozen MiniLM vectors tops out below the workers on sentiment (its
features were trained for sentence similarity, not polarity); fine-tuning the encoder on a
few hundred labelled items takes a minute or two on a CPU. Soft labels train exactly (the
cross-entropy against the label distribution), hard ones are one-hot. The saved student is a
folder: the encoder and tokenizer (``save_pretrained``), the head (safetensors) and
``student.json`` (labels, settings); ``bbx predict`` loads it like the linear one.

The training loop is a plain torch loop rather than transformers' ``Trainer``: the data is a
few hundred rows with per-row soft targets and weights, which ``Trainer`` would need a custom
loss and collator for, and it would pull in its accelerate/datasets machinery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blackbox.errors import BbxError

MODEL = "finetuned-minilm"


@dataclass
class FinetuneConfig:
    """How the encoder is fine-tuned (AdamW, linear decay, mean pooling as the embedder)."""

    epochs: int = 4
    lr: float = 5e-5
    head_lr: float = 1e-3  # the new head starts from zero: it may move faster
    batch_size: int = 16
    max_tokens: int = 128
    weight_decay: float = 0.01


def _pool(model: Any, enc: dict[str, Any]) -> Any:
    import torch

    states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


class FinetunedStudent:
    """The fine-tuned encoder + head, with the linear student's ``predict_texts``."""

    def __init__(self, labels: list[str], model: Any, tokenizer: Any, head: Any,
                 cfg: FinetuneConfig, meta: dict[str, Any] | None = None) -> None:
        self.labels, self.model, self.tokenizer, self.head = labels, model, tokenizer, head
        self.cfg, self.meta = cfg, dict(meta or {})

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, ``(n, C)``."""
        import torch

        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True,
                                     truncation=True, max_length=self.cfg.max_tokens,
                                     return_tensors="pt")
                out.append(torch.softmax(self.head(_pool(self.model, enc)), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict_texts(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Label raw texts (no LLM): the same rows as the linear student's."""
        texts = list(texts)
        probs = self.predict_proba(texts)
        return [{"text": t, "label": self.labels[int(p.argmax())],
                 "confidence": round(float(p.max()), 4),
                 "probs": {lab: round(float(v), 4) for lab, v in zip(self.labels, p, strict=True)}}
                for t, p in zip(texts, probs, strict=True)]

    def save(self, folder: str | Path) -> Path:
        """Write the folder (encoder, tokenizer, head, student.json); returns student.json."""
        from safetensors.torch import save_file

        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(root / "encoder")
        self.tokenizer.save_pretrained(root / "encoder")
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()},
                  str(root / "head.safetensors"))
        spec = {"format": "bbx-student", "version": 1, "model": MODEL,
                "labels": self.labels, "finetune": asdict(self.cfg), "meta": self.meta}
        path = root / "student.json"
        path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FinetunedStudent:
        """Read a folder written by :meth:`save` (``path``: its student.json)."""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        p = Path(path)
        root = p.parent
        data = json.loads(p.read_text(encoding="utf-8"))
        if not (root / "encoder" / "config.json").is_file():
            raise BbxError(f"{root} holds no encoder/ folder: pass the student.json of a "
                           "distill run's fine-tuned student, with its folder beside it")
        model = AutoModel.from_pretrained(root / "encoder", local_files_only=True,
                                          dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(root / "encoder", local_files_only=True)
        head = torch.nn.Linear(int(model.config.hidden_size), len(data["labels"]))
        head.load_state_dict(load_file(str(root / "head.safetensors")))
        return cls(list(data["labels"]), model, tok, head, FinetuneConfig(**data["finetune"]),
                   data.get("meta"))


def finetune(texts: Sequence[str], targets: np.ndarray, weights: np.ndarray | None,
             labels: Sequence[str], cfg: FinetuneConfig, seed: int,
             log: Any = None) -> FinetunedStudent:
    """Fine-tune MiniLM + a linear head on ``texts`` with label distributions ``targets``
    ``(n, C)`` (one-hot for hard labels) and per-row ``weights``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from blackbox.engine.embed import minilm_folder

    if len(texts) == 0:
        raise BbxError("the fine-tuned student needs training examples: add gold shots")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    folder = minilm_folder()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    head = torch.nn.Linear(int(model.config.hidden_size), len(labels))
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": cfg.lr},
                             {"params": head.parameters(), "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    n = len(texts)
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    t = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    w = torch.as_tensor(np.ones(n, np.float32) if weights is None
                        else np.asarray(weights, dtype=np.float32))
    model.train()
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            enc = tok([texts[j] for j in idx], padding=True, truncation=True,
                      max_length=cfg.max_tokens, return_tensors="pt")
            logp = torch.log_softmax(head(_pool(model, enc)), dim=-1)
            loss = (-(t[idx] * logp).sum(1) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log is not None:
            log(f"  fine-tune epoch {epoch + 1}/{cfg.epochs}: loss {total / n:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    return FinetunedStudent(list(labels), model, tok, head, cfg)
