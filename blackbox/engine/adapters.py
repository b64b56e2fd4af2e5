"""The adapter repository: a folder of PEFT LoRA adapters, loaded lazily, listed, loaded and
unloaded at run time, and turned into (cached) low-rank factors for a request's adapter spec.

A spec is an adapter name or a normalized mixture ``{"adapters", "alpha", "beta"}`` (see
:func:`blackbox.backends.base.normalize_adapter`). Two caches make repeated requests cheap:

* sparsified LoRA-A factors per ``(adapter, alpha)`` (Evo-Merging's stage 2 searches β with α
  fixed, so every candidate reuses them), kept from the second request for a pair on: a
  first request masks the kept entries inside the mixing sum, which is cheaper than writing
  the copy, and stage 1's candidates each bring a new α;
* composed mixtures per canonical spec (a candidate is scored on many batches of examples).

Both are LRU caches bounded in bytes (512 MB each by default); unloading an adapter drops
its entries.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError, UnknownAdapter, did_you_mean

#: how many (adapter, alpha) pairs the repository remembers having seen once
_SEEN_MAX = 100_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _LRU(OrderedDict):
    """A least-recently-used cache bounded by the bytes of the tensors it holds."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.bytes = 0

    def get_or(self, key: Any, make: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key][0]
        value = make()
        size = _nbytes(value)
        self[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self) > 1:
            _, (_, old) = self.popitem(last=False)
            self.bytes -= old
        return value

    def drop(self, key: Any) -> None:
        if key in self:
            self.bytes -= self.pop(key)[1]

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


def _nbytes(value: Any) -> int:
    """Bytes of the tensors in nested dicts / tuples / lists (shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif hasattr(v, "untyped_storage"):
            storage = v.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def spec_key(spec: Any) -> str:
    """A canonical string for a normalized adapter spec (cache key)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def save_peft_adapter(factors: Any, out: Path, spec: Any = None) -> Path:
    """Write low-rank factors ``{module: (A, B)}`` as a PEFT LoRA folder any LoRA server loads.

    The factors have each adapter's scaling folded into ``B`` (see
    :mod:`blackbox.engine.lora`), so the folder is saved with ``lora_alpha = r`` (scaling 1):
    loading it anywhere applies the same update ``B·A``. ``spec`` (the mixture it came from)
    goes next to the weights in ``bbx_mixture.json`` (peft's config loader refuses unknown
    keys). Written to a temporary folder and renamed into place.
    """
    import os
    import shutil

    import torch
    from safetensors.torch import save_file

    ranks = {a.shape[0] for a, _ in factors.values()}
    if len(ranks) != 1:
        raise BbxError(f"the factors have ranks {sorted(ranks)}: a PEFT folder needs one rank")
    r = ranks.pop()
    tensors = {}
    for m, (a, b) in factors.items():
        tensors[f"base_model.model.{m}.lora_A.weight"] = a.detach().to(torch.float32).contiguous()
        tensors[f"base_model.model.{m}.lora_B.weight"] = b.detach().to(torch.float32).contiguous()
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": r,
              "target_modules": sorted({m.rsplit(".", 1)[-1] for m in factors}),
              "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
              "use_rslora": False, "init_lora_weights": True, "base_model_name_or_path": None}
    out = Path(out)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")  # a dot-name is never listed
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if spec is not None:
        (tmp / "bbx_mixture.json").write_text(json.dumps(spec, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


class AdapterRepository:
    """Named LoRA adapters over one base model (thread-safe).

    ``folder`` holds one sub-folder per adapter (its name is the adapter's name); more can be
    loaded from anywhere with :meth:`load`. ``lora`` is the model's
    :class:`~blackbox.engine.lora.BatchedLora`, used to check that an adapter fits the model;
    without it adapters are not checked against a model (factor-level use and tests).
    """

    def __init__(self, folder: str | Path | None = None, lora: Any = None,
                 sparse_cache_mb: int = 512, mixture_cache_mb: int = 512) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else None
        if self.folder is not None and not self.folder.is_dir():
            raise BbxError(f"adapter folder {self.folder} does not exist: give a folder of "
                           "PEFT LoRA adapters (one sub-folder each)")
        self.lora = lora
        self._paths: dict[str, Path] = {}
        self._loaded: dict[str, Any] = {}
        self._sparse = _LRU(sparse_cache_mb << 20)
        self._mixtures = _LRU(mixture_cache_mb << 20)
        self._seen: OrderedDict[tuple[str, float], None] = OrderedDict()  # see factors()
        self._lock = threading.RLock()
        if self.folder is not None:
            for sub in sorted(self.folder.iterdir()):
                if (sub / "adapter_config.json").is_file() and _NAME.match(sub.name):
                    self._paths[sub.name] = sub

    # ---- listing, loading, unloading ----------------------------------------------------

    def names(self) -> list[str]:
        """Names of the adapters available (loaded into memory or not yet)."""
        # no lock: list() of a dict is atomic under the GIL, and the server's event loop
        # must not wait while the batcher thread composes a mixture under the lock
        return sorted(list(self._paths))

    def path(self, name: str) -> Path:
        """The folder adapter ``name`` is read from (white-box merges read its files)."""
        with self._lock:
            if name not in self._paths:
                raise self._unknown(name)
            return self._paths[name]

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def list(self) -> list[dict[str, Any]]:
        """One entry per adapter: name, path, loaded flag, and its config once loaded."""
        with self._lock:
            out = []
            for name in sorted(self._paths):
                entry: dict[str, Any] = {"name": name, "path": str(self._paths[name]),
                                         "loaded": name in self._loaded}
                if name in self._loaded:
                    entry.update(self._loaded[name].info())
                out.append(entry)
            return out

    def load(self, name: str, path: str | Path | None = None) -> dict[str, Any]:
        """Add (or reload) adapter ``name`` from ``path`` (default: ``<folder>/<name>``).

        The weights are read and checked against the model now, so a bad adapter is refused
        here rather than on the first request that names it.
        """
        from blackbox.engine.lora import read_adapter

        if not isinstance(name, str) or not _NAME.match(name):
            raise BbxError(f"bad adapter name {name!r}: use letters, digits, '.', '_' or '-'")
        if path is None:
            if self.folder is None:
                raise BbxError(f"adapter '{name}' needs a path: this server has no adapter folder")
            path = self.folder / name
        path = Path(path).expanduser()
        if not path.is_dir():
            raise BbxError(f"adapter path {path} is not a folder")
        adapter = read_adapter(path, name)
        if self.lora is not None:
            self.lora.check(adapter.factors, name)
        with self._lock:
            self._drop_caches(name)
            self._paths[name] = path
            self._loaded[name] = adapter
            return {"name": name, "path": str(path), "loaded": True, **adapter.info()}

    def materialize(self, name: str, spec: Any) -> dict[str, Any]:
        """Save a mixture as a new PEFT adapter ``<folder>/<name>`` and load it under ``name``
        (Evo-Merging's result, served from then on like any other adapter)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise BbxError(f"bad adapter name {name!r}: use letters, digits, '.', '_' or '-'")
        if self.folder is None:
            raise BbxError("this repository has no folder to write a new adapter to")
        if name in self._paths:
            raise BbxError(f"adapter '{name}' already exists: choose another name")
        self.validate(spec)
        path = save_peft_adapter(self.factors(spec), self.folder / name, spec)
        return self.load(name, path)

    def unload(self, name: str) -> None:
        """Forget adapter ``name`` (requests naming it fail with 'unknown adapter' after)."""
        with self._lock:
            if name not in self._paths:
                raise self._unknown(name)
            del self._paths[name]
            self._loaded.pop(name, None)
            self._drop_caches(name)

    def clear_caches(self) -> None:
        """Forget every sparsified factor and composed mixture (and which pairs were seen):
        the next request for any mixture composes it from scratch."""
        with self._lock:
            self._sparse.clear()
            self._mixtures.clear()
            self._seen.clear()

    def _drop_caches(self, name: str) -> None:
        for key in [k for k in self._sparse if k[0] == name]:
            self._sparse.drop(key)
        for key in [k for k in self._seen if k[0] == name]:
            del self._seen[key]
        self._mixtures.clear()  # cheap to rebuild; mixtures naming `name` must not survive

    def _unknown(self, name: str) -> UnknownAdapter:
        known = sorted(list(self._paths))
        hint = did_you_mean(name, known) if known else " (the repository is empty)"
        return UnknownAdapter(f"unknown adapter '{name}'{hint}")

    def get(self, name: str) -> Any:
        """The :class:`~blackbox.engine.lora.LoraAdapter` called ``name`` (read on first use)."""
        with self._lock:
            if name not in self._paths:
                raise self._unknown(name)
            if name not in self._loaded:
                self.load(name, self._paths[name])
            return self._loaded[name]

    # ---- factors for a request ----------------------------------------------------------

    def validate(self, spec: Any) -> None:
        """Raise :class:`BbxError` unless every adapter a normalized spec names is known."""
        names = [spec] if isinstance(spec, str) else list(spec["adapters"])
        for n in names:  # lock-free, as names()
            if n not in self._paths:
                raise self._unknown(n)

    def factors(self, spec: Any) -> Any:
        """The low-rank factors ``{module: (A, B)}`` of a normalized adapter spec (cached)."""
        from blackbox.engine.lora import (
            mix,
            mix_stacks,
            single_threaded,
            sparsify_stacks,
            unstack,
        )

        if spec is None:
            return None
        if isinstance(spec, str):
            return self.get(spec).factors
        with self._lock:
            adapters = [self.get(n) for n in spec["adapters"]]

            def sparse(a: Any, alpha: float) -> Any:
                """The cached sparse stacks of ``(a, alpha)``, made on the second request
                for them; ``None`` on the first (mixing then masks on the fly)."""
                key = (a.name, alpha)
                if alpha >= 1.0:
                    return a.stacks
                if key in self._sparse or key in self._seen:
                    return self._sparse.get_or(key, lambda: sparsify_stacks(a.stacks, alpha,
                                                                           a.ranks))
                self._seen[key] = None
                while len(self._seen) > _SEEN_MAX:
                    self._seen.popitem(last=False)
                return None

            def make() -> Any:
                sparse_a = [sparse(a, al) for a, al in zip(adapters, spec["alpha"], strict=True)]
                fast = mix_stacks(adapters, spec["alpha"], spec["beta"], sparse_a)
                if fast is not None:
                    return fast
                return mix([a.factors for a in adapters], spec["alpha"], spec["beta"],
                           [None if s is None else unstack(s) for s in sparse_a])

            with single_threaded():
                return self._mixtures.get_or(spec_key(spec), make)
