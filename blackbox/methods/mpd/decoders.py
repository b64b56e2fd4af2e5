"""The decoders: MPD (optimal transport over P prompts' features + calibrated class scores)
and DecT (one prompt, frozen prototypes with learned radii + λ · calibrated scores).

Both train in seconds on cached features: full batch, Adam, cross-entropy. torch is
imported inside the functions (``bbx --help`` must not pay for it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from blackbox.methods.mpd.features import Features
from blackbox.methods.mpd.scores import calibrated_scores


@dataclass
class DecoderSpec:
    """A decoder's hyper-parameters (JSON-ready; saved with the weights)."""

    kind: Literal["mpd", "dect"] = "mpd"
    pooling: Literal["ot", "mean"] = "ot"
    calibrate: bool = True
    proj_dim: int = 128
    prototypes: int = 3
    epsilon: float = 0.1
    sinkhorn_iters: int = 100
    scale: float = 10.0
    lr: float = 1e-2
    epochs: int = 30
    feature_norm: Literal["none", "center", "standardize"] = "standardize"
    betas: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for the decoder file)."""
        return asdict(self)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: these tensors are tiny, and on a shared CPU torch's thread
    pool makes a fit 3-4x slower, not faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build_head(spec: DecoderSpec, dim: int, n_classes: int, seed: int) -> Any:
    import torch
    from torch import nn

    from blackbox.methods.mpd.transport import mean_pool_scores, ot_scores

    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / dim**0.5  # nn.Linear's default init, drawn from our own generator

    class MPDHead(nn.Module):
        """Projection d→m (no bias) and Q prototypes per class; score = scale · OT score."""

        def __init__(self) -> None:
            super().__init__()
            w = torch.empty(spec.proj_dim, dim).uniform_(-bound, bound, generator=gen)
            self.proj = nn.Parameter(w)
            self.protos = nn.Parameter(
                torch.randn(n_classes, spec.prototypes, spec.proj_dim, generator=gen))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            v = h @ self.proj.T
            if spec.pooling == "mean":
                s = mean_pool_scores(v, self.protos)
            else:
                s = ot_scores(v, self.protos, spec.epsilon, spec.sinkhorn_iters)
            return spec.scale * s

    class DecTHead(nn.Module):
        """DecT's head (Cui et al. 2023): projection d→m (no bias), L2-normalized, frozen
        random unit prototypes, a learned radius per class: logit_k = r_k − ‖z − p_k‖.
        The radii start from the data (:func:`init_radius`), not from zero."""

        def __init__(self) -> None:
            super().__init__()
            w = torch.empty(spec.proj_dim, dim).uniform_(-bound, bound, generator=gen)
            self.proj = nn.Parameter(w)
            protos = torch.randn(n_classes, spec.proj_dim, generator=gen)
            self.register_buffer("protos", protos / protos.norm(dim=1, keepdim=True))
            self.radius = nn.Parameter(torch.zeros(n_classes))

        def project(self, h: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(h[:, 0] @ self.proj.T, dim=1)

        protos: torch.Tensor  # a buffer (registered above)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return self.radius - torch.cdist(self.project(h), self.protos)

        def init_radius(self, h: torch.Tensor, y: torch.Tensor) -> None:
            """Each class's radius: the mean distance of its training examples to its
            prototype under the initial projection."""
            with torch.no_grad():
                d = torch.cdist(self.project(h), self.protos)
                for c in range(n_classes):
                    rows = d[y == c, c]
                    if len(rows):
                        self.radius[c] = rows.mean()

    return MPDHead() if spec.kind == "mpd" else DecTHead()


def _norm_stats(hidden: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Per (prompt, dimension) mean and scale from the labelled k-shot features.

    Why: the last-layer states of small decoder LMs have a few dimensions with huge,
    input-independent values; left alone they dominate every cosine. Centering removes the
    shared offset; standardizing also evens out the scales. With few shots the per-dimension
    variance is noisy, so it is shrunk toward the average variance.
    """
    p, d = hidden.shape[1], hidden.shape[2]
    if how == "none" or len(hidden) == 0:
        return np.zeros((p, d), np.float32), np.ones((p, d), np.float32)
    mean = hidden.mean(axis=0)
    if how == "center":
        return mean.astype(np.float32), np.ones((p, d), np.float32)
    n = len(hidden)
    var = hidden.var(axis=0)
    w = n / (n + 4.0)
    var = w * var + (1 - w) * var.mean(axis=1, keepdims=True)
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)


@dataclass
class Decoder:
    """A fitted decoder: spec, weights, normalization, calibration inputs and the weight of
    the calibrated score (β for MPD, λ for DecT). ``logits`` needs only features."""

    spec: DecoderSpec
    n_classes: int
    dim: int
    groups: list[list[int]]  # per class, indices into the decoder's own word list
    cf: np.ndarray  # (P, W) content-free log-probs
    mean: np.ndarray  # (P, d)
    std: np.ndarray  # (P, d)
    state: dict[str, np.ndarray]  # the head's parameters
    cal_weight: float
    info: dict[str, Any] = field(default_factory=dict)

    def head_scores(self, feats: Features) -> np.ndarray:
        """The hidden-state part of the logits, ``(n, C)``."""
        import torch

        head = _build_head(self.spec, self.dim, self.n_classes, 0)
        head.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state.items()})
        h = torch.from_numpy((feats.hidden - self.mean) / self.std)
        with torch.no_grad(), _one_thread():
            return head(h).double().numpy()

    def cal_scores(self, feats: Features) -> np.ndarray:
        """The calibrated label-word part (log class distribution), ``(n, C)``."""
        return calibrated_scores(feats.logp, self.cf, self.groups)

    def logits(self, feats: Features) -> np.ndarray:
        """Joint score: head score + weight · calibrated score."""
        out = self.head_scores(feats)
        if self.cal_weight:
            out = out + self.cal_weight * self.cal_scores(feats)
        return out


def _ce(logits: np.ndarray, y: np.ndarray) -> float:
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def choose_weight(head: np.ndarray, cal: np.ndarray, y: np.ndarray,
                  betas: Sequence[float]) -> tuple[float, dict[str, float]]:
    """The β of ``betas`` with the best dev accuracy; ties go to the lower dev
    cross-entropy (with one shot per class, accuracy alone ties almost always)."""
    best: tuple[float, float, float] | None = None
    table: dict[str, float] = {}
    for b in betas:
        z = head + b * cal
        acc = float(np.mean(z.argmax(axis=1) == y))
        key = (-acc, _ce(z, y), b)
        table[str(b)] = acc
        if best is None or key < best:
            best = key
    assert best is not None
    return best[2], table


def _adam(params: list[Any], lr: float, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8) -> Any:
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` with its defaults. Written out because
    importing ``torch.optim`` pulls in torch's compiler stack (~3 s), longer than a fit."""
    import torch

    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = 0

    def step() -> None:
        nonlocal t
        t += 1
        with torch.no_grad():
            for p, mi, vi in zip(params, m, v, strict=True):
                if p.grad is None:
                    continue
                mi.mul_(b1).add_(p.grad, alpha=1 - b1)
                vi.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (vi / (1 - b2**t)).sqrt_().add_(eps)
                p.addcdiv_(mi, denom, value=-lr / (1 - b1**t))

    return step


def fit_decoder(spec: DecoderSpec, train: Features, y_train: np.ndarray, dev: Features,
                y_dev: np.ndarray, cf: np.ndarray, groups: list[list[int]], n_classes: int,
                shots: int, seed: int) -> Decoder:
    """Train the head on ``train``; pick the calibrated score's weight (MPD's β, DecT's λ)
    on ``dev`` from ``spec.betas`` (1 when there is no dev split). ``shots`` is kept for
    callers; the weight no longer depends on it."""
    import torch

    t0 = time.perf_counter()
    dim = train.hidden.shape[2]
    both = np.concatenate([train.hidden, dev.hidden]) if len(dev) else train.hidden
    mean, std = _norm_stats(both, spec.feature_norm)
    head = _build_head(spec, dim, n_classes, seed)
    h = torch.from_numpy((train.hidden - mean) / std)
    y = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    if spec.kind == "dect":
        head.init_radius(h, y)
    params = [p for p in head.parameters() if p.requires_grad]
    step = _adam(params, spec.lr)
    with _one_thread():
        for _ in range(spec.epochs):
            for p in params:
                p.grad = None
            loss = torch.nn.functional.cross_entropy(head(h), y)
            loss.backward()
            step()
    state = {k: v.detach().cpu().numpy().copy() for k, v in head.state_dict().items()}
    dec = Decoder(spec, n_classes, dim, [list(g) for g in groups], np.asarray(cf), mean, std,
                  state, 0.0)
    info: dict[str, Any] = {"final_train_loss": round(float(loss.detach()), 4)}
    if spec.calibrate:
        # DecT's λ and MPD's β: the same dev-tuned grid, so neither baseline is under-tuned
        if len(dev):
            dec.cal_weight, info["dev_accuracy_by_beta"] = choose_weight(
                dec.head_scores(dev), dec.cal_scores(dev), np.asarray(y_dev), spec.betas)
        else:
            dec.cal_weight = 1.0
    info["cal_weight"] = dec.cal_weight
    info["fit_s"] = round(time.perf_counter() - t0, 3)
    dec.info = info
    return dec
