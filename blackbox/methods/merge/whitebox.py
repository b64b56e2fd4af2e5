"""Server-side operations on the adapters' weights: the white-box merging references (TIES,
DARE) computed with ``peft``'s ``add_weighted_adapter``, and materializing a found mixture
as a plain PEFT LoRA adapter that any LoRA server can load.

These read weights, so they run where the repository is: a backend with the ``repository``
ability (here, a local backend holding it: ``backend: {kind: local, adapters: DIR}``).
Through a remote backend they are refused with a message saying so — that is the
black-box setting's point.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from blackbox.backends.abilities import has
from blackbox.backends.base import Backend
from blackbox.errors import BbxError

#: peft combination types. TIES: trim to ``density``, elect signs, disjoint mean (weights 1).
#: DARE: drop at rate 1 - ``density`` and rescale, then average (weights 1/N). Both are
#: computed on the full ΔW = B·A per module and factored back by SVD at rank N·r, so no
#: rank is lost to the merge itself.
COMBINATION = {"ties": "ties_svd", "dare": "dare_linear_svd"}


def local_repository(backend: Backend, what: str) -> Any:
    """The adapter repository of a backend with the ``repository`` ability (a local one
    holding it), or a BbxError naming the fix."""
    if not has(backend, "repository"):
        raise BbxError(f"{what} reads the adapters' weights (white-box): run it with a local "
                       "backend that holds the repository (backend: {kind: local, adapters: "
                       "DIR}); through a remote backend only black-box variants work")
    return backend.adapter_repository()  # type: ignore[attr-defined]


def _content_hash(folders: list[Path]) -> str:
    h = hashlib.sha256()
    for f in folders:
        h.update((f / "adapter_model.safetensors").read_bytes())
        h.update((f / "adapter_config.json").read_bytes())
    return h.hexdigest()[:12]


def peft_merge(backend: Backend, names: list[str], kind: str, density: float, seed: int,
               out_root: Path) -> str:
    """Merge ``names`` with TIES or DARE (peft), load the result into the repository and
    return its name. The name carries a hash of the inputs, so equal merges share cache."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from blackbox.engine.loader import convert_gguf

    if kind not in COMBINATION:
        raise BbxError(f"unknown white-box merge '{kind}': use ties or dare")
    repo = local_repository(backend, kind)
    folders = [repo.path(n) for n in names]
    tag = hashlib.sha256(json.dumps([kind, density, seed if kind == "dare" else 0,
                                     _content_hash(folders)]).encode()).hexdigest()[:10]
    name = f"{kind}-{tag}"
    if name in repo.names():
        return name
    out = out_root / name
    if not (out / "adapter_model.safetensors").is_file():
        source = backend.model_source()  # type: ignore[attr-defined]
        model_folder = convert_gguf(source) if source.kind == "gguf" else source.path
        base = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32,
                                                    local_files_only=True)
        model = PeftModel.from_pretrained(base, str(folders[0]), adapter_name=names[0])
        for n, f in zip(names[1:], folders[1:], strict=True):
            model.load_adapter(str(f), adapter_name=n)
        ranks = [int(model.peft_config[n].r) for n in names]  # type: ignore[attr-defined]
        weights = [1.0] * len(names) if kind == "ties" else [1.0 / len(names)] * len(names)
        torch.manual_seed(seed)  # DARE's random drop
        model.add_weighted_adapter(names, weights, "merged", combination_type=COMBINATION[kind],
                                   density=density, svd_rank=sum(ranks))
        tmp = out_root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), selected_adapters=["merged"])
        saved = tmp / "merged" if (tmp / "merged").is_dir() else tmp
        shutil.rmtree(out, ignore_errors=True)
        os.replace(saved, out)
        shutil.rmtree(tmp, ignore_errors=True)
    repo.load(name, out)
    return name


def materialize(backend: Backend, spec: dict[str, Any], out: Path) -> Path:
    """Write a mixture as a PEFT LoRA adapter (``A*``, ``B*``; rank = the adapters' rank) in
    ``out``, from a local backend's repository (see
    :func:`~blackbox.engine.adapters.save_peft_adapter`)."""
    from blackbox.engine.adapters import save_peft_adapter

    repo = local_repository(backend, "materialize")
    return save_peft_adapter(repo.factors(spec), out, spec)
