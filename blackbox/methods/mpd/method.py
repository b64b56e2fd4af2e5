"""``bbx decode``: fit a Multi-Prompting Decoder (or DecT) on a k-shot split, or predict.

Fit: query every train/dev/eval example under P templates (hidden state + label-word
log-probs; all answers land in the shared response cache, so test features are paid once
per task and template, whatever the seed or shot count), train the decoder and the
``compare:`` variants on those features, report accuracy, save the decoder file.

Predict: load a decoder file and label the texts of a JSONL file through the backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from blackbox.data import load_split
from blackbox.data.datasets import read_texts, seeded_subset
from blackbox.data.tasks import Task
from blackbox.errors import BbxError
from blackbox.methods.base import RunContext
from blackbox.methods.mpd.bundle import SavedDecoder, load_decoder, save_decoder
from blackbox.methods.mpd.decoders import Decoder, DecoderSpec, fit_decoder
from blackbox.methods.mpd.features import (
    Features,
    LogprobsFromHidden,
    content_free,
    expand_label_words,
    flatten,
    hidden_route,
    query_features,
)
from blackbox.methods.mpd.recipe import DecodeRecipe
from blackbox.methods.mpd.scores import calibrated_scores, zero_shot_scores
from blackbox.methods.scoring import accuracy, macro_f1
from blackbox.paths import portable
from blackbox.runs import child_rng
from blackbox.stats import correct_string


class Variant(NamedTuple):
    """A decoder to train on the shared features: its spec, which of the queried prompts it
    reads, and how many label words per class."""

    spec: DecoderSpec
    prompts: list[int]
    words_per_class: int


CANONICAL = ("mpd", "mpd-mean", "mpd-nocal", "mpd-1word", "dect")


def _variant(name: str, recipe: DecodeRecipe, n_prompts: int) -> Variant:
    """A named variant with the recipe's hyper-parameters; ``main`` is the recipe's own."""
    spec = DecoderSpec(kind="mpd", pooling="ot", calibrate=True, proj_dim=recipe.proj_dim,
                       prototypes=recipe.prototypes, epsilon=recipe.epsilon,
                       sinkhorn_iters=recipe.sinkhorn_iters, scale=recipe.scale, lr=recipe.lr,
                       epochs=recipe.epochs, feature_norm=recipe.feature_norm,
                       betas=list(recipe.betas))
    every = list(range(n_prompts))
    k = recipe.neighbours
    if name == "main":
        spec.kind, spec.pooling, spec.calibrate = recipe.decoder, recipe.pooling, recipe.calibrate
        if recipe.decoder == "dect":  # DecT: one prompt, the task's own label words
            return Variant(spec, [0], 1)
        return Variant(spec, every, k)
    if name == "mpd":
        return Variant(spec, every, k)
    if name == "mpd-mean":
        spec.pooling = "mean"
        return Variant(spec, every, k)
    if name == "mpd-nocal":
        spec.calibrate = False
        return Variant(spec, every, k)
    if name == "mpd-1word":
        return Variant(spec, every, 1)
    if name == "dect":
        spec.kind = "dect"
        return Variant(spec, [0], 1)
    raise BbxError(f"unknown decoder variant '{name}': use one of {', '.join(CANONICAL)}")


def _variants(recipe: DecodeRecipe, n_prompts: int) -> tuple[str, dict[str, Variant]]:
    """The main decoder (under a canonical name when it is one, so tables find it) and the
    ``compare:`` variants that train (zero-shot needs no training)."""
    main = _variant("main", recipe, n_prompts)
    main_name = next((n for n in CANONICAL if _variant(n, recipe, n_prompts) == main), "main")
    out = {main_name: main}
    for name in recipe.compare:
        if name not in ("zero-shot", "zero-shot-cal") and name not in out:
            out[name] = _variant(name, recipe, n_prompts)
    return main_name, out


def _metrics(logits: np.ndarray, gold: np.ndarray, n_classes: int) -> dict[str, Any]:
    pred = logits.argmax(axis=1)
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, n_classes),
            "correct": correct_string(pred, gold)}


def _label_words(ctx: RunContext, task: Task, k: int,
                 texts: list[str]) -> list[list[str]]:
    """Each class's label words (its own + nearest), noting in the run how they were found."""
    groups, nb_route = expand_label_words(ctx.backend, task.label_words, k, texts)
    ctx.notes["label_word_neighbours"] = nb_route
    if nb_route == "embedding-model":
        ctx.notes["label_word_neighbours"] = (
            "embedding-model: the backend exposes no vocabulary/output embeddings, so "
            "neighbours are the k-shot texts' words nearest by sentence embedding")
    return groups


def _fit(recipe: DecodeRecipe, ctx: RunContext) -> dict[str, Any]:
    task = recipe.get_task()
    backend = ctx.backend
    all_templates = recipe.prompt_templates()
    main_name, variants = _variants(recipe, len(all_templates))
    # query only the templates some variant reads (DecT alone needs the first)
    templates = all_templates[: max(p for v in variants.values() for p in v.prompts) + 1]
    k_max = max(v.words_per_class for v in variants.values())

    if backend.capabilities.label_logprobs == "none":
        raise BbxError(f"backend '{backend.name}' gives no label-word log-probs: MPD needs "
                       "them; use a backend with logprobs")
    route = hidden_route(backend)
    if route != "native":
        ctx.notes["hidden_route"] = (f"{route}: the backend has no native hidden states, so "
                                     "embeddings of the rendered prompts stand in for them")
    splits = {"train": load_split(task, "train", recipe.shots, recipe.seed),
              "dev": load_split(task, "dev", recipe.shots, recipe.seed)}
    ev = recipe.eval_split
    if ev not in splits:
        splits[ev] = seeded_subset(load_split(task, ev, recipe.shots, recipe.seed),
                                 recipe.test_limit, recipe.test_seed)
        for name in ("train", "dev"):
            splits[name] = ctx.fit_only(name, splits[name], splits[ev])
        ctx.check_leak({"train": splits["train"], "dev": splits["dev"]}, {ev: splits[ev]})
    else:
        ctx.check_leak({"train": splits["train"]}, {ev: splits[ev]})
    groups = _label_words(ctx, task, k_max, [e.text for e in splits["train"] + splits["dev"]])
    flat, index = flatten(groups)
    derive = None
    if recipe.logprobs_from_hidden:
        if route != "native":
            raise BbxError("logprobs_from_hidden needs native hidden states: set "
                           "logprobs_from_hidden: false for this backend")
        derive = LogprobsFromHidden.for_backend(backend, flat)
        ctx.notes["label_logprobs"] = ("read off the hidden states with the output-embedding "
                                       "matrix (logprobs_from_hidden), not queried")
    cf = content_free(backend, templates, flat, derive)
    with ctx.progress() as bar:
        feats = {split: query_features(
            backend, [e.text for e in exs], templates, flat, route=route,
            max_words=task.max_words, chunk=recipe.chunk, progress=bar,
            description=f"features {split}", derive=derive)
            for split, exs in splits.items()}
    y = {split: np.array([e.label for e in exs]) for split, exs in splits.items()}

    results: dict[str, dict[str, Any]] = {}
    if "zero-shot" in recipe.compare:
        zs = zero_shot_scores(feats[ev].logp, index)
        results["zero-shot"] = {**_metrics(zs, y[ev], task.n_classes), "prompts": 1,
                                "label_words_per_class": 1, "queries_per_example": 1,
                                "fit_s": 0.0}
    if "zero-shot-cal" in recipe.compare:
        v = variants[main_name] if variants[main_name].spec.kind == "mpd" else \
            _variant("mpd", recipe, len(all_templates))
        words = [i for g in index for i in g[: v.words_per_class]]
        zc = calibrated_scores(feats[ev].subset(v.prompts, words).logp,
                               cf[v.prompts][:, words],
                               flatten([g[: v.words_per_class] for g in groups])[1])
        results["zero-shot-cal"] = {**_metrics(zc, y[ev], task.n_classes),
                                    "prompts": len(v.prompts),
                                    "label_words_per_class": v.words_per_class,
                                    "queries_per_example": len(v.prompts), "fit_s": 0.0}
    fitted: dict[str, tuple[Decoder, Features]] = {}
    for name, v in variants.items():
        words = [i for g in index for i in g[: v.words_per_class]]
        sub = {s: f.subset(v.prompts, words) for s, f in feats.items()}
        seed = int(child_rng(recipe.seed, f"decode-init-{name}").integers(2**31))
        dec = fit_decoder(v.spec, sub["train"], y["train"], sub["dev"], y["dev"],
                          cf[v.prompts][:, words],
                          flatten([g[: v.words_per_class] for g in groups])[1],
                          task.n_classes, recipe.shots, seed)
        fitted[name] = (dec, sub[ev])
        results[name] = {**_metrics(dec.logits(sub[ev]), y[ev], task.n_classes),
                         "prompts": len(v.prompts), "label_words_per_class": v.words_per_class,
                         # one hidden + one label_logprobs item per prompt
                         "queries_per_example": 2 * len(v.prompts), **dec.info}

    # the main decoder: its file and its predictions on the evaluated split
    main, main_feats = fitted[main_name]
    v = variants[main_name]
    saved = SavedDecoder(
        main, list(task.labels), [templates[p] for p in v.prompts],
        [g[: v.words_per_class] for g in groups], task.name, task.max_words,
        backend.fingerprint, recipe.backend.model_dump(mode="json"), route)
    out = (Path(recipe.decoder_out) if recipe.decoder_out
           else ctx.run_dir.path / "decoder.safetensors")
    save_decoder(out, saved)
    _write_predictions(ctx.run_dir.path / "predictions.jsonl", [e.text for e in splits[ev]],
                       main.logits(main_feats), list(task.labels), y[ev])
    res = results[main_name]
    return {
        "action": "fit", "task": task.name, "shots": recipe.shots, "decoder": main_name,
        "eval_split": ev, "n_train": len(splits["train"]), "n_dev": len(splits["dev"]),
        "n_eval": len(splits[ev]), "accuracy": res["accuracy"], "macro_f1": res["macro_f1"],
        "fit_s": res["fit_s"], "queries_per_example": res["queries_per_example"],
        "variants": results, "templates": saved.templates, "label_words": saved.words,
        "decoder_file": portable(out),
    }


def _write_predictions(path: Path, texts: list[str], logits: np.ndarray, labels: list[str],
                       gold: np.ndarray | None) -> None:
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    with path.open("w", encoding="utf-8") as f:
        for i, (t, p) in enumerate(zip(texts, probs, strict=True)):
            row: dict[str, Any] = {"text": t[:200], "pred": labels[int(p.argmax())],
                                   "probs": np.round(p, 4).tolist()}
            if gold is not None and gold[i] >= 0:
                row["gold"] = labels[int(gold[i])]
            f.write(json.dumps(row) + "\n")


def _predict(recipe: DecodeRecipe, ctx: RunContext) -> dict[str, Any]:
    assert recipe.decoder_file is not None and recipe.input is not None
    saved = load_decoder(recipe.decoder_file)
    backend = ctx.backend
    if saved.fingerprint and saved.fingerprint != backend.fingerprint:
        raise BbxError(
            f"decoder {recipe.decoder_file} was fit on backend {saved.fingerprint}, this "
            f"backend is {backend.fingerprint}: predict through the backend it was fit on "
            f"({saved.backend})")
    if hidden_route(backend) != saved.hidden_route:
        raise BbxError(
            f"decoder {recipe.decoder_file} was fit on '{saved.hidden_route}' hidden states but "
            f"this backend gives '{hidden_route(backend)}': predict through the backend it was "
            "fit on")
    texts, gold = read_texts(recipe.input, tuple(saved.labels))
    with ctx.progress() as bar:
        feats = query_features(backend, texts, saved.templates, saved.flat_words,
                               route=saved.hidden_route, max_words=saved.max_words,
                               chunk=recipe.chunk, progress=bar, description="features")
    logits = saved.decoder.logits(feats)
    pred = logits.argmax(axis=1)
    paths = [ctx.run_dir.path / "predictions.jsonl"]
    if recipe.output:
        paths.append(Path(recipe.output))
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
    for p in paths:
        _write_predictions(p, texts, logits, saved.labels, gold)
    counts = {lab: int(np.sum(pred == c)) for c, lab in enumerate(saved.labels)}
    summary: dict[str, Any] = {"action": "predict", "task": saved.task, "n": len(texts),
                               "predicted": counts, "decoder_file": recipe.decoder_file,
                               "predictions": [str(p) for p in paths]}
    has = gold >= 0
    if has.any():
        summary["n_labelled"] = int(has.sum())
        summary["accuracy"] = accuracy(pred[has], gold[has])
    return summary


def run(recipe: DecodeRecipe, ctx: RunContext) -> dict[str, Any]:
    """Fit (``action: fit``) or apply (``action: predict``) a decoder; return the summary."""
    if recipe.action == "predict":
        return _predict(recipe, ctx)
    return _fit(recipe, ctx)
