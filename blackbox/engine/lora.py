"""LoRA adapters as low-rank factors: reading PEFT folders, the sparsify rule, mixtures, and
applying per-row mixtures inside one batched forward pass.

A PEFT LoRA adapter adds ``scaling · B @ A`` to each target ``nn.Linear`` (``A``: ``(r, in)``,
``B``: ``(out, r)``, ``scaling = lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA). Here the
scaling is folded into ``B`` when the adapter is read, so every adapter, and every mixture,
is a plain set of factors ``{module: (A, B)}`` whose update is ``x @ Aᵀ @ Bᵀ``.

A mixture (the Evo-Merging rule) is ``A* = Σ βᵢ · sparse(Aᵢ, αᵢ)`` and ``B* = Σ βᵢ · Bᵢ`` per
module, where ``sparse`` keeps the top ``⌈αᵢ · numel⌉`` entries of each LoRA-A tensor by
magnitude. Adapters of different ranks are zero-padded to the largest rank (the padded rows
and columns contribute nothing), and a module an adapter does not target counts as zeros.

:class:`BatchedLora` applies factors through forward hooks on the base model's linear
layers: the base weights are never rewritten, and every row of a batch can carry its own
factors, so requests with different mixtures share one forward pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blackbox.errors import BbxError

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name -> (A (r, in), B (out, r))
# modules grouped by (A shape, B shape) -> (names, A stacked (L, r, in), B stacked (L, out, r)):
# sparsifying and mixing work on a few stacked tensors instead of hundreds of small ones
Stacks = dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[list[str], torch.Tensor, torch.Tensor]]
_PEFT_PREFIX = "base_model.model."
_UNSUPPORTED = {
    "use_dora": "DoRA", "fan_in_fan_out": "fan_in_fan_out (Conv1D) layers",
    "lora_bias": "LoRA bias terms", "use_qalora": "QA-LoRA", "layer_replication":
    "layer replication",
}


def keep_count(alpha: float, numel: int) -> int:
    """How many entries ``sparse(·, alpha)`` keeps: ``⌈alpha · numel⌉``, within ``[0, numel]``.

    A relative 1e-9 is taken off the product first, so float noise (``0.1 · 10`` is
    ``1.0000000000000002``) does not keep one entry too many.
    """
    if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
        raise BbxError(f"keep-fraction alpha must be in [0, 1], got {alpha}")
    x = alpha * numel
    return min(numel, max(0, math.ceil(x - 1e-9 * max(1.0, x))))


def sparsify(a: torch.Tensor, alpha: float) -> torch.Tensor:
    """``a`` with all but its ``keep_count(alpha, a.numel())`` largest-magnitude entries zeroed.

    Ties at the cut are broken by position (the earlier entry in row-major order stays), so
    exactly ``keep_count`` entries are kept and the result is deterministic.
    """
    return sparsify_rows(a.reshape(1, -1), keep_count(alpha, a.numel())).reshape(a.shape)


def sparsify_rows(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of a 2-D tensor, keep the ``k`` largest-magnitude entries (stable ties).

    A selection (``kthvalue``, linear time) finds each row's threshold magnitude; entries
    above it are kept, and of those equal to it the first ones by position fill up to ``k``.
    A full sort would be ~20x slower, and a new mixture sparsifies every LoRA-A tensor.
    """
    n = flat.shape[1]
    if k >= n:
        return flat.clone()
    if k <= 0:
        return torch.zeros_like(flat)
    mag = flat.abs()
    thr = mag.kthvalue(n - k + 1, dim=1, keepdim=True).values  # the k-th largest
    keep = mag >= thr
    if bool((keep.sum(dim=1) == k).all()):  # no tie straddles the cut (trained weights)
        return flat * keep
    above = mag > thr
    ties = keep & ~above
    room = k - above.sum(dim=1, keepdim=True)
    return flat * (above | (ties & (ties.cumsum(dim=1) <= room)))


@dataclass(frozen=True)
class LoraAdapter:
    """One PEFT LoRA adapter read into fp32 factors (scaling already folded into ``B``)."""

    name: str
    path: Path
    rank: int
    lora_alpha: float
    target_modules: tuple[str, ...]
    factors: Factors
    stacks: Stacks = field(default_factory=dict, repr=False, compare=False)
    ranks: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False,
                                           compare=False)  # see sparsify_stacks

    @property
    def num_parameters(self) -> int:
        """Number of LoRA parameters (A and B entries)."""
        return sum(a.numel() + b.numel() for a, b in self.factors.values())

    def info(self) -> dict[str, Any]:
        """A JSON-ready description (for ``/v1/adapters``)."""
        return {"name": self.name, "path": str(self.path), "r": self.rank,
                "lora_alpha": self.lora_alpha, "target_modules": list(self.target_modules),
                "modules": len(self.factors), "parameters": self.num_parameters}


def read_adapter(folder: str | Path, name: str | None = None) -> LoraAdapter:
    """Read a PEFT LoRA folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    folder = Path(folder)
    name = name or folder.name
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise BbxError(f"adapter '{name}': {folder} holds no adapter_config.json "
                       "(a PEFT LoRA folder is expected)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise BbxError(f"adapter '{name}': unreadable adapter_config.json ({e})") from e
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise BbxError(f"adapter '{name}' is not a LoRA adapter (peft_type "
                       f"{cfg.get('peft_type') if isinstance(cfg, dict) else '?'})")
    for key, what in _UNSUPPORTED.items():
        if cfg.get(key):
            raise BbxError(f"adapter '{name}' uses {what}, which bbx's batched LoRA does not "
                           "support: use plain LoRA adapters")
    if cfg.get("alpha_pattern"):
        raise BbxError(f"adapter '{name}' has a per-module alpha_pattern, which bbx does not "
                       "support: save it with one lora_alpha")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise BbxError(f"adapter '{name}': {folder} holds no adapter_model.safetensors")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise BbxError(f"adapter '{name}': unreadable adapter_model.safetensors ({e})") from e
    r_default = int(cfg.get("r", 8))
    lora_alpha = float(cfg.get("lora_alpha", r_default))
    rslora = bool(cfg.get("use_rslora"))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key and key.endswith(".weight"):
                module = key.split(marker)[0].removeprefix(_PEFT_PREFIX)
                pairs.setdefault(module, {})[part] = value.float()
                break
        else:
            raise BbxError(f"adapter '{name}' holds a tensor bbx cannot apply: {key} "
                           "(only LoRA A/B weights of linear layers are supported)")
    factors: Factors = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise BbxError(f"adapter '{name}': module {module} lacks its lora_A or lora_B")
        a, b = pair["lora_A"], pair["lora_B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise BbxError(f"adapter '{name}': module {module} has mismatched LoRA shapes "
                           f"A {tuple(a.shape)}, B {tuple(b.shape)}")
        r = a.shape[0]  # the real rank (rank_pattern may give modules their own)
        scaling = lora_alpha / (math.sqrt(r) if rslora else r)
        factors[module] = (a.contiguous(), (b * scaling).contiguous())
    if not factors:
        raise BbxError(f"adapter '{name}' holds no LoRA weights")
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    stacks = stack_factors(factors)
    # the per-module factors are views into the stacks: one copy of the weights in memory
    return LoraAdapter(name, folder, r_default, lora_alpha, tuple(sorted(targets)),
                       unstack(stacks), stacks)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block's torch ops on one thread, then restore the thread count.

    Composing a mixture is hundreds of small element-wise ops; on a busy 2-core machine the
    thread pool's wake-ups cost more than the work (measured: 5x slower sparsify, 19x slower
    mixing with 2 threads than with 1). Forward passes keep all threads.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def stack_factors(factors: Factors) -> Stacks:
    """Group modules by factor shapes and stack each group's A and B."""
    names: dict[tuple[tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for m, (a, b) in factors.items():
        names.setdefault((tuple(a.shape), tuple(b.shape)), []).append(m)
    return {key: (ms, torch.stack([factors[m][0] for m in ms]),
                  torch.stack([factors[m][1] for m in ms])) for key, ms in names.items()}


def unstack(stacks: Stacks) -> Factors:
    """Per-module ``(A, B)`` views of stacked factors."""
    out: Factors = {}
    for ms, a, b in stacks.values():
        for m, a_m, b_m in zip(ms, a.unbind(0), b.unbind(0), strict=True):
            out[m] = (a_m, b_m)
    return out


def magnitude_ranks(flat: torch.Tensor) -> torch.Tensor:
    """Per row of a 2-D tensor, each entry's place in the row's descending-magnitude order
    (0: the largest; ties by position, as :func:`sparsify_rows`), as float32."""
    order = flat.abs().argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty(flat.shape, dtype=torch.float32)
    places = torch.arange(flat.shape[1], dtype=torch.float32)
    return ranks.scatter_(1, order, places.expand_as(ranks))


def sparsify_stacks(stacks: Stacks, alpha: float,
                    ranks: dict[Any, torch.Tensor] | None = None) -> Stacks:
    """``sparse(A, alpha)`` for every module, per stacked group (B is shared, not copied).

    ``ranks`` (filled on first use; keep it per adapter) holds each group's
    :func:`magnitude_ranks`, so the cut for any alpha is a mask rather than a selection
    (see :func:`_keep_mask`): Evo-Merging asks for a new alpha per candidate, for every adapter.
    """
    if alpha >= 1.0:
        return stacks
    out: Stacks = {}
    for key, (ms, a, b) in stacks.items():
        flat = a.reshape(a.shape[0], -1)
        mask = _keep_mask(key, flat, alpha, ranks)
        kept = sparsify_rows(flat, keep_count(alpha, flat.shape[1])) if mask is None \
            else mask.mul_(flat)
        out[key] = (ms, kept.reshape(a.shape), b)
    return out


def _keep_mask(key: Any, flat: torch.Tensor, alpha: float,
               ranks: dict[Any, torch.Tensor] | None) -> torch.Tensor | None:
    """The float 0/1 mask of the entries ``sparse(·, alpha)`` keeps in each row of ``flat``,
    from the cached ranks (``None`` without a cache, or past float32's exact integers).

    ``clamp(k - rank, 0, 1)`` is exactly 1 on the ``k`` kept entries and 0 elsewhere: two
    float ops over the tensor. Comparisons that make bool masks, and multiplying by them, are
    slow CPU kernels: a threshold compare on sorted magnitudes took 2.8 ms per 830K entries
    against 0.7 ms for this, and sparsifying ten SmolLM2 adapters 43 against 13 ms.
    """
    if ranks is None or flat.shape[1] > 1 << 24:
        return None
    if key not in ranks:
        ranks[key] = magnitude_ranks(flat)
    return torch.rsub(ranks[key], keep_count(alpha, flat.shape[1])).clamp_(0.0, 1.0)


def mix_stacks(adapters: Sequence[LoraAdapter], alpha: Sequence[float], beta: Sequence[float],
               sparse: Sequence[Stacks | None]) -> Factors | None:
    """The mixture computed on stacks; ``None`` when the adapters' modules or shapes differ
    (then :func:`mix` does it module by module).

    ``sparse[i]`` is adapter ``i``'s sparsified stacks when they are at hand (a cache); when
    ``None``, its kept entries are masked inside the sum (``addcmul``) with no sparse copy:
    writing a new tensor per adapter cost more than the whole mixing (fresh memory is
    page-faulted in), and a one-off alpha gains nothing from keeping it.
    """
    stacks = [a.stacks for a in adapters]
    keys = list(stacks[0])
    if any(list(s) != keys or any(s[k][0] != stacks[0][k][0] for k in keys) for s in stacks):
        return None
    out: Stacks = {}
    for key in keys:
        ms, a0, b0 = stacks[0][key]
        a_sum = torch.zeros_like(a0)
        b_sum = torch.zeros_like(b0)
        flat_sum = a_sum.view(a0.shape[0], -1)
        for ad, al, be, sp in zip(adapters, alpha, beta, sparse, strict=True):
            b_sum.add_(ad.stacks[key][2], alpha=be)  # fused scale-and-add, no temporaries
            flat = ad.stacks[key][1].reshape(a0.shape[0], -1)
            if sp is not None:
                flat_sum.add_(sp[key][1].reshape(flat.shape), alpha=be)
            elif al >= 1.0:
                flat_sum.add_(flat, alpha=be)
            elif (mask := _keep_mask(key, flat, al, ad.ranks)) is not None:
                flat_sum.addcmul_(flat, mask, value=be)
            else:
                flat_sum.add_(sparsify_rows(flat, keep_count(al, flat.shape[1])), alpha=be)
        out[key] = (ms, a_sum, b_sum)
    return unstack(out)


def mix(adapters: Sequence[Factors], alpha: Sequence[float], beta: Sequence[float],
        sparse_a: Sequence[Factors | None] | None = None) -> Factors:
    """The mixture ``A* = Σ βᵢ · sparse(Aᵢ, αᵢ)``, ``B* = Σ βᵢ · Bᵢ`` per module.

    ``sparse_a`` may give the already-sparsified factors (a cache); those missing (``None``)
    are computed here. Ranks are zero-padded to the largest one per module.
    """
    if not (len(adapters) == len(alpha) == len(beta)) or not adapters:
        raise BbxError("a mixture needs one alpha and one beta per adapter")
    given = list(sparse_a) if sparse_a is not None else [None] * len(adapters)
    sparse = [sp if sp is not None else sparsify_factors(f, a)
              for f, a, sp in zip(adapters, alpha, given, strict=True)]
    modules = sorted({m for f in adapters for m in f})
    out: Factors = {}
    for m in modules:
        present = [(i, f[m]) for i, f in enumerate(adapters) if m in f]
        rank = max(a.shape[0] for _, (a, _b) in present)
        a0, b0 = present[0][1]
        a_sum = a0.new_zeros((rank, a0.shape[1]))
        b_sum = b0.new_zeros((b0.shape[0], rank))
        for i, (a, b) in present:
            r = a.shape[0]
            a_sum[:r] += beta[i] * sparse[i][m][0]
            b_sum[:, :r] += beta[i] * b
        out[m] = (a_sum, b_sum)
    return out


def sparsify_factors(factors: Factors, alpha: float) -> Factors:
    """``sparse(A, alpha)`` for every module (B untouched)."""
    if alpha >= 1.0:
        return factors
    return unstack(sparsify_stacks(stack_factors(factors), alpha))


#: up to this many distinct mixtures in a batch, the masked path (one matmul over all K·R
#: rank columns) beats the gathered batched matmuls; measured on SmolLM2's shapes (32 rows
#: of 32 tokens, r=8): masked 0.2 / 0.3 / 1.0 ms, gathered 0.28 ms flat, at K = 1 / 4 / 20
MASKED_MAX = 2
#: a forward pass over at most this many tokens applies its LoRA updates on one thread
SMALL_TOKENS = 64


class BatchedLora:
    """Per-row LoRA factors applied by forward hooks on a model's linear layers.

    Inside ``with lora.rows([f0, f1, None, ...]):`` each forward pass adds row ``i``'s update
    ``x_i @ Aᵀ @ Bᵀ`` (``None``: the base model) to every hooked layer's output. Outside the
    block the hooks return early and the model is the plain base model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._handles: dict[str, Any] = {}
        self._active: dict[str, Any] | None = None
        self._last: tuple[Any, list[Factors], dict[str, Any]] | None = None
        self._dtype = next(model.parameters()).dtype
        self._device = next(model.parameters()).device

    def check(self, factors: Factors, name: str) -> None:
        """Raise :class:`BbxError` unless every module exists in the model with these shapes."""
        for m, (a, b) in factors.items():
            try:
                layer = self.model.get_submodule(m)
            except AttributeError:
                raise BbxError(f"adapter '{name}' targets {m}, which this model does not have: "
                               "was it trained on another base model?") from None
            if not isinstance(layer, torch.nn.Linear):
                raise BbxError(f"adapter '{name}' targets {m}, a {type(layer).__name__}: "
                               "only linear layers are supported")
            if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
                raise BbxError(
                    f"adapter '{name}' does not fit this model: {m} is {layer.in_features}->"
                    f"{layer.out_features} but the adapter's factors are A {tuple(a.shape)}, "
                    f"B {tuple(b.shape)} (trained on another base model?)")

    def _hook(self, name: str) -> None:
        if name in self._handles:
            return
        layer = self.model.get_submodule(name)

        def apply(_mod: Any, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
            active = self._active
            if active is None or name not in active:
                return None
            x = args[0]
            if x.numel() > SMALL_TOKENS * x.shape[-1]:
                return delta(x, out, *active[name])
            # a few tokens: the update is three tiny ops, and waking a second (sleeping,
            # OMP_WAIT_POLICY=PASSIVE as bbx serve sets) OpenMP thread for each costs more
            # than the op: measured 92 -> 68 ms for a one-prompt request under a mixture
            with single_threaded():
                return delta(x, out, *active[name])

        def delta(x: torch.Tensor, out: torch.Tensor, kind: str, a: torch.Tensor,
                  b: torch.Tensor, sel: Any) -> torch.Tensor:
            if kind == "shared":  # every row has the same factors: two plain matmuls
                return out + (x @ a.T) @ b.T
            if kind == "masked":
                # few mixtures: all K stacked along the rank (K·R columns), one matmul for
                # every row, each row's own R columns kept by the mask, one matmul back
                h = x @ a.T
                h = h * sel.reshape(sel.shape[0], *([1] * (h.dim() - 2)), sel.shape[1])
                return out + h @ b.T
            # many mixtures: each row gathers its own (R, in) and (R, out) factors and two
            # batched matmuls apply them, R columns per row whatever K is (masking costs
            # K·R: with a population of 20 that was ~half the forward pass, this ~1/8).
            # index_select, B stored transposed and the add fused into an in-place baddbmm
            # (the layer's fresh output; out of place when autograd records): measured
            # 1.7 -> 0.6 ms for an up_proj of 32 rows (advanced indexing copies slowly),
            # ~5% of a population's forward passes
            rows = x.reshape(x.shape[0], -1, x.shape[-1])
            h = torch.bmm(rows, a.index_select(0, sel).transpose(1, 2))
            acc = out.reshape(out.shape[0], -1, out.shape[-1])
            b_rows = b.index_select(0, sel)
            if torch.is_inference_mode_enabled():
                return acc.baddbmm_(h, b_rows).reshape(out.shape)
            return torch.baddbmm(acc, h, b_rows).reshape(out.shape)

        self._handles[name] = layer.register_forward_hook(apply)

    @contextmanager
    def rows(self, per_row: Sequence[Factors | None]) -> Iterator[None]:
        """Apply ``per_row[i]`` to row ``i`` of every forward pass inside the block."""
        distinct: list[Factors] = []
        slot: list[int] = []
        for f in per_row:
            if f is None:
                slot.append(-1)
                continue
            for j, g in enumerate(distinct):
                if g is f:
                    slot.append(j)
                    break
            else:
                distinct.append(f)
                slot.append(len(distinct) - 1)
        if not distinct:
            yield
            return
        # a decode batch enters this once per generated token with the same rows: the last
        # build is kept (with its factors, so their ids stay theirs) and reused
        key = (tuple(id(f) for f in distinct), tuple(slot))
        if self._last is not None and self._last[0] == key:
            active = self._last[2]
        else:
            with single_threaded():  # hundreds of small copies: see single_threaded
                active = self._build(distinct, slot)
            self._last = (key, distinct, active)
        if self._active is not None:
            raise RuntimeError("BatchedLora.rows is not reentrant")
        self._active = active
        try:
            yield
        finally:
            self._active = None

    def _build(self, distinct: list[Factors], slot: list[int]) -> dict[str, Any]:
        """Per hooked module, what its hook applies: shared factors; for a few (at most
        ``MASKED_MAX``) distinct mixtures, their factors concatenated along the rank with a
        per-row column mask; for more, the factors stacked (K+1, R, in) / (K+1, R, out)
        with each row's index (the last entry is zeros: rows on the base model)."""
        active: dict[str, Any] = {}
        modules = sorted({m for f in distinct for m in f})
        shared = len(distinct) == 1 and -1 not in slot
        k = len(distinct)
        masked = k <= MASKED_MAX
        index = torch.tensor([j if j >= 0 else k for j in slot], device=self._device)
        masks: dict[int, torch.Tensor] = {}
        for m in modules:
            self._hook(m)
            if shared:
                a, b = distinct[0][m]
                active[m] = ("shared", self._cast(a), self._cast(b), None)
                continue
            present = [f.get(m) for f in distinct]
            ref_a, ref_b = next(p for p in present if p is not None)
            rank = max(p[0].shape[0] for p in present if p is not None)
            # zero-padded to the largest rank; a mixture without the module stays zeros
            a_all = ref_a.new_zeros((k + 1, rank, ref_a.shape[1]))
            b_all = ref_b.new_zeros((k + 1, ref_b.shape[0], rank))
            for j, p in enumerate(present):
                if p is not None:
                    a_all[j, :p[0].shape[0]] = p[0]
                    b_all[j, :, :p[1].shape[1]] = p[1]
            if masked:
                if rank not in masks:
                    masks[rank] = self._row_mask(slot, k, rank)
                active[m] = ("masked", self._cast(a_all[:k].reshape(k * rank, -1)),
                             self._cast(b_all[:k].permute(1, 0, 2).reshape(b_all.shape[1], -1)),
                             masks[rank])
            else:  # B as (K+1, R, out): each row's slice is contiguous for the bmm
                b_rows = b_all.transpose(1, 2).contiguous()
                active[m] = ("rows", self._cast(a_all), self._cast(b_rows), index)
        return active

    def _row_mask(self, slot: list[int], k: int, rank: int) -> torch.Tensor:
        """(rows, K·R): 1 on each row's own mixture's R rank columns (none for the base)."""
        mask = torch.zeros((len(slot), k * rank))
        for row, j in enumerate(slot):
            if j >= 0:
                mask[row, j * rank:(j + 1) * rank] = 1.0
        return self._cast(mask)

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self._device, dtype=self._dtype)

    def remove(self) -> None:
        """Detach every hook (the model is the plain base model again)."""
        for h in self._handles.values():
            h.remove()
        self._handles.clear()
        self._last = None
