"""The decoder file: one small ``.safetensors`` file, weights as tensors and everything else
(templates, label words, labels, hyper-parameters, the backend it was fit on) as JSON in the
file's metadata. No pickle: loading it runs no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blackbox.errors import BbxError
from blackbox.methods.mpd.decoders import Decoder, DecoderSpec
from blackbox.methods.mpd.features import flatten

FORMAT = "bbx-decoder/1"
_META_KEY = "bbx_decoder"


@dataclass
class SavedDecoder:
    """A fitted decoder plus what it needs to label new text through a backend."""

    decoder: Decoder
    labels: list[str]
    templates: list[str]
    words: list[list[str]]  # per class, the label words whose log-probs it reads
    task: str = ""
    max_words: int | None = None
    fingerprint: str = ""  # the backend's model fingerprint at fit time
    backend: dict[str, Any] = field(default_factory=dict)  # the recipe's backend config
    hidden_route: str = "native"

    @property
    def flat_words(self) -> list[str]:
        """The word list to query, in the order of ``decoder.cf``'s columns."""
        return flatten(self.words)[0]


def save_decoder(path: str | Path, saved: SavedDecoder) -> Path:
    """Write the decoder file (parent folders are created)."""
    from safetensors.numpy import save_file

    dec = saved.decoder
    tensors = {f"head.{k}": np.ascontiguousarray(v) for k, v in dec.state.items()}
    tensors["norm.mean"] = np.ascontiguousarray(dec.mean, dtype=np.float32)
    tensors["norm.std"] = np.ascontiguousarray(dec.std, dtype=np.float32)
    tensors["cf"] = np.ascontiguousarray(dec.cf, dtype=np.float64)
    meta = {
        "format": FORMAT, "spec": dec.spec.as_dict(), "n_classes": dec.n_classes,
        "dim": dec.dim, "cal_weight": dec.cal_weight, "info": dec.info,
        "labels": saved.labels, "templates": saved.templates, "words": saved.words,
        "task": saved.task, "max_words": saved.max_words, "fingerprint": saved.fingerprint,
        "backend": saved.backend, "hidden_route": saved.hidden_route,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(meta, default=float)})
    return path


def load_decoder(path: str | Path) -> SavedDecoder:
    """Read a decoder file written by :func:`save_decoder`."""
    from safetensors import SafetensorError
    from safetensors.numpy import safe_open

    path = Path(path)
    if not path.is_file():
        raise BbxError(f"decoder file {path} not found: pass the file bbx decode fit saved "
                       "(by default <run dir>/decoder.safetensors)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as e:
        raise BbxError(f"{path} is not a safetensors file ({e}): pass a bbx decoder file") from None
    if raw is None:
        raise BbxError(f"{path} is a safetensors file but not a bbx decoder: pass the file "
                       "bbx decode fit saved")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise BbxError(f"{path}: decoder format {meta.get('format')!r} is not {FORMAT!r}: "
                       "refit it with this version of bbx")
    spec = DecoderSpec(**meta["spec"])
    state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    words = [list(g) for g in meta["words"]]
    dec = Decoder(spec, int(meta["n_classes"]), int(meta["dim"]), flatten(words)[1],
                  tensors["cf"], tensors["norm.mean"], tensors["norm.std"], state,
                  float(meta["cal_weight"]), meta.get("info", {}))
    return SavedDecoder(dec, list(meta["labels"]), list(meta["templates"]), words,
                        meta.get("task", ""), meta.get("max_words"), meta.get("fingerprint", ""),
                        meta.get("backend", {}), meta.get("hidden_route", "native"))
