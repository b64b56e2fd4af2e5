"""What ``method: decode`` will pay, stage by stage (see :mod:`.method`).

Fit: the label-word neighbours (embeddings of the label words and of the k-shot texts'
words, only where the backend has no output-embedding table to read), the content-free
prompts (one label-score query per template), then per split (train, dev, the evaluation
split) every example under every template: one hidden state (or embedding) and one
label-score query each. Predict: the input texts under the decoder's templates.
"""

from __future__ import annotations

import re
from collections import Counter

from blackbox.backends.base import Backend
from blackbox.data import load_split
from blackbox.data.datasets import read_texts, seeded_subset
from blackbox.data.tasks import render
from blackbox.errors import BbxError
from blackbox.methods.mpd.features import MAX_FALLBACK_CANDIDATES, hidden_route
from blackbox.methods.mpd.recipe import DecodeRecipe
from blackbox.methods.plan import Stage, distinct

_WORDS = re.compile(r"[A-Za-z]{3,}")  # the candidate words of the neighbour fallback


def plan(recipe: DecodeRecipe, backend: Backend) -> list[Stage]:
    """The stages of a decode run (:mod:`blackbox.methods.plan`)."""
    from blackbox.methods.mpd.method import _variants

    if recipe.action == "predict":
        from blackbox.methods.mpd.bundle import load_decoder

        assert recipe.decoder_file is not None and recipe.input is not None
        saved = load_decoder(recipe.decoder_file)
        texts, _ = read_texts(recipe.input, tuple(saved.labels))
        return _features("predict", texts, saved.templates, saved.flat_words,
                         saved.hidden_route, saved.max_words, False)
    task = recipe.get_task()
    all_templates = recipe.prompt_templates()
    _, variants = _variants(recipe, len(all_templates))
    templates = all_templates[: max(p for v in variants.values() for p in v.prompts) + 1]
    k = max(v.words_per_class for v in variants.values())
    words = [w for w in task.label_words for _ in range(k)]  # stand-ins for the neighbours
    splits = {"train": load_split(task, "train", recipe.shots, recipe.seed),
              "dev": load_split(task, "dev", recipe.shots, recipe.seed)}
    if recipe.eval_split not in splits:
        splits[recipe.eval_split] = seeded_subset(
            load_split(task, recipe.eval_split, recipe.shots, recipe.seed), recipe.test_limit,
            recipe.test_seed)
    stages: list[Stage] = []
    inner = getattr(backend, "inner", backend)
    reads_table = hasattr(inner, "vocabulary") and hasattr(inner, "token_embeddings")
    try:  # a remote backend asks its server (free); unreachable, assume the common case
        route, embeds = hidden_route(backend), backend.capabilities.embed
    except BbxError:
        route, embeds = "embeddings", True
    if k > 1 and not reads_table and embeds:
        texts = [e.text for e in splits["train"] + splits["dev"]]
        counts = Counter(m.group(0).lower() for t in texts for m in _WORDS.finditer(t))
        cands = sorted(counts)[:MAX_FALLBACK_CANDIDATES]
        stages.append(Stage("label-word neighbours", "embed", len(task.label_words) + len(cands),
                            [w.strip() for w in task.label_words] + cands))
    stages.append(Stage("content-free", "label_logprobs", len(templates),
                        [render(t, "", "") for t in templates], words))
    for split, exs in splits.items():
        stages += _features(split, [e.text for e in exs], templates, words, route,
                            task.max_words, recipe.logprobs_from_hidden)
    return stages


def _features(split: str, texts: list[str], templates: list[str], words: list[str],
              route: str, max_words: int | None, from_hidden: bool) -> list[Stage]:
    """One split's queries: every text under every template, hidden state + label scores."""
    prompts = distinct([render(t, x, "", max_words) for x in texts for t in templates])
    verb = "embed" if route == "embed" else "hidden"
    out = [Stage(f"{split}: hidden states", verb, len(prompts), prompts)]
    if not from_hidden:
        out.append(Stage(f"{split}: label scores", "label_logprobs", len(prompts), prompts,
                         words))
    return out
