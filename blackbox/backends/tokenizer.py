"""A tokenizer the user names for a remote model, where its server has none to ask.

``logit_bias`` (recovering label words outside the top-k) and ClaPS's candidate vocabulary
need the model's token ids. A server may say them (bbx's, vLLM's and llama-server's
``/tokenize``, llama-cpp-python's ``/extras/tokenize``, bbx's ``/v1/vocabulary``); a hosted
API does not. Then
``backend.tokenizer`` names one: a local Hugging Face tokenizer folder, loaded offline. It
must be the served model's own tokenizer: ids from another one bias the wrong tokens.

``tiktoken`` encodings (OpenAI's models) are not taken: ``tiktoken.get_encoding`` fetches
its data from the network on first use, and bbx downloads nothing at run time. Without a
tokenizer, ``logit_bias`` is off and ClaPS searches its word list (the run's notes say so).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError


class NamedTokenizer:
    """Token ids and the token list of a tokenizer named by ``spec`` (see module docs)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._pieces: list[str] | None = None
        if spec.startswith("tiktoken:"):
            raise BbxError("tiktoken encodings are not supported (tiktoken downloads their "
                           "data at run time): give the model's Hugging Face tokenizer "
                           "folder, or leave tokenizer out (logit_bias off, ClaPS on its "
                           "word list)")
        self._tok: Any = _hugging_face(spec)

    def encode(self, text: str) -> list[int]:
        """``text``'s token ids, without special tokens."""
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def count(self, texts: list[str]) -> list[int]:
        """Each text's token count (real counts for budgets, where the server gives none)."""
        return [max(1, len(self.encode(t))) for t in texts]

    @functools.cached_property
    def digest(self) -> str:
        """A short digest of the token list (computed once: fingerprints read it per call)."""
        return hashlib.sha256("\x1f".join(self.pieces()).encode()).hexdigest()[:16]

    def pieces(self) -> list[str]:
        """The token list, index = token id (each token decoded alone)."""
        if self._pieces is None:
            self._pieces = [self._tok.decode([i]) for i in range(len(self._tok))]
        return self._pieces


def _hugging_face(folder: str) -> Any:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise BbxError(f"tokenizer '{folder}' is not a folder: give a local Hugging Face "
                       "tokenizer folder (tokenizer.json) or tiktoken:ENCODING")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise BbxError(f"tokenizer folder '{folder}' has no tokenizer transformers can load "
                       f"({str(e).splitlines()[0][:120]}): give the model's tokenizer "
                       "folder") from None

