"""MPD (bbx decode): optimal transport, calibration, label-word neighbours, the decoder file,
fit → save → load → predict, recipes and the CLI. Fake backend; one slow test on the real
model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from blackbox.api import decode_fit, decode_predict, run_recipe
from blackbox.backends.base import Capabilities
from blackbox.backends.fake import FakeBackend
from blackbox.errors import BbxError
from blackbox.methods.mpd.bundle import load_decoder
from blackbox.methods.mpd.decoders import DecoderSpec
from blackbox.methods.mpd.features import _pick_neighbours, expand_label_words, flatten
from blackbox.methods.mpd.scores import calibrated_scores, zero_shot_scores
from blackbox.recipes import parse_recipe
from tests.conftest import bbx

torch = pytest.importorskip("torch")

FAKE = {"kind": "fake", "bias": {"great": {" positive": 3.0}, "bad": {" negative": 3.0}}}


# -- optimal transport ------------------------------------------------------------------------

def test_sinkhorn_plan_marginals_and_pot_agree() -> None:
    import ot

    from blackbox.methods.mpd.transport import sinkhorn

    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(7, 3, 4, generator=gen, dtype=torch.float64) * 2  # cosine costs in [0, 2]
    plan = sinkhorn(cost, epsilon=0.1, iters=100)
    assert torch.allclose(plan.sum(-1), torch.full((7, 3), 1 / 3, dtype=torch.float64),
                          atol=1e-5)
    assert torch.allclose(plan.sum(-2), torch.full((7, 4), 1 / 4, dtype=torch.float64),
                          atol=1e-9)
    ref = ot.sinkhorn(np.full(3, 1 / 3), np.full(4, 1 / 4), cost[2].numpy(), reg=0.1,
                      numItermax=1000, stopThr=1e-12)
    assert np.allclose(plan[2].numpy(), ref, atol=1e-5)


def test_ot_score_is_the_cosine_when_p_and_q_are_one() -> None:
    from blackbox.methods.mpd.transport import ot_scores

    gen = torch.Generator().manual_seed(1)
    v, r = torch.randn(5, 1, 8, generator=gen), torch.randn(3, 1, 8, generator=gen)
    cos = torch.nn.functional.cosine_similarity(v[:, 0, None, :], r[None, :, 0, :], dim=-1)
    assert torch.allclose(ot_scores(v, r), cos, atol=1e-6)


def test_ot_score_prefers_the_matching_not_the_mean() -> None:
    from blackbox.methods.mpd.transport import mean_pool_scores, ot_scores

    # two prompts pointing along e0 and e1; class 0's prototypes are exactly e0 and e1
    v = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    protos = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [0, 0, 1.0]]])
    s = ot_scores(v, protos, epsilon=0.01)
    assert s[0, 0] > 0.99 and abs(float(s[0, 1])) < 1e-6  # the plan matches e0↔e0, e1↔e1
    m = mean_pool_scores(v, protos)
    assert math.isclose(float(m[0, 0]), 1 / math.sqrt(2), rel_tol=1e-5)


# -- calibration ----------------------------------------------------------------------------

def test_calibration_matches_a_hand_computed_case() -> None:
    # one example, two prompts, two classes with words {0, 1} and {2}
    p1 = np.log([[0.2, 0.1, 0.4], [0.3, 0.3, 0.1]])  # p(w | x), per prompt
    cf = np.log([[0.1, 0.1, 0.4], [0.3, 0.1, 0.2]])  # p(w | "")
    got = np.exp(calibrated_scores(p1[None], cf, [[0, 1], [2]]))[0]
    # prompt 1: class means (0.15, 0.4) / content-free (0.1, 0.4) = (1.5, 1)   → (0.6, 0.4)
    # prompt 2: class means (0.3, 0.1)  / content-free (0.2, 0.2) = (1.5, 0.5) → (0.75, 0.25)
    # (calibrating each word instead would give class 0 in prompt 2 the mean of 1 and 3)
    want = np.array([(0.6 + 0.75) / 2, (0.4 + 0.25) / 2])
    assert np.allclose(got, want)
    assert np.isclose(got.sum(), 1.0)


def test_zero_shot_uses_the_first_prompt_and_first_words() -> None:
    logp = np.log(np.array([[[0.1, 0.5, 0.3], [0.9, 0.0 + 1e-9, 0.1]]]))
    z = np.exp(zero_shot_scores(logp, [[0, 1], [2]]))[0]
    assert np.allclose(z, [0.25, 0.75])


# -- label-word neighbours --------------------------------------------------------------------

def test_neighbours_are_nearest_and_never_shared() -> None:
    label = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = np.array([[0.9, 0.1], [0.8, 0.3], [0.2, 0.9], [0.6, 0.59], [0.59, 0.6], [1, 0.0]])
    words = [" a", " b", " c", " d", " e", " Pos"]
    groups = _pick_neighbours(label, cand, words, [" pos", " neg"], 3)
    assert groups[0][0] == " pos" and groups[1][0] == " neg"
    assert " Pos" not in groups[0]  # a case variant of a label word is not a neighbour
    assert groups[0][1:] == [" a", " b"] and groups[1][1:] == [" c", " e"]
    assert not set(groups[0]) & set(groups[1])


class _VocabBackend(FakeBackend):
    """A fake backend that also exposes a vocabulary and output embeddings, like LocalBackend."""

    @property
    def capabilities(self) -> Capabilities:  # both abilities declared, like LocalBackend
        return Capabilities(vocabulary=True, token_embeddings=True)

    def vocabulary(self) -> list[str]:
        return [" good", " great", "ing", " bad", " awful", " 1999", " nice", " terrible"]

    def token_embeddings(self, which: str = "output") -> np.ndarray:
        assert which == "output"
        return np.array([[1, 0], [0.95, 0.1], [1, 0], [0, 1], [0.1, 0.95], [1, 0.01],
                         [0.9, 0.2], [0.05, 1]], dtype=np.float32)


def test_neighbours_from_output_embeddings_skip_non_words() -> None:
    groups, route = expand_label_words(_VocabBackend(), [" bad", " good"], 3)
    assert route == "output-embeddings"
    assert groups == [[" bad", " terrible", " awful"], [" good", " great", " nice"]]


def test_neighbours_fall_back_to_the_embedding_model() -> None:
    groups, route = expand_label_words(FakeBackend(), [" bad", " good"], 4,
                                       ["a good film", "a bad, bad film", "nice acting"])
    assert route == "embedding-model"
    assert [g[0] for g in groups] == [" bad", " good"]
    assert len(flatten(groups)[0]) == len(set(flatten(groups)[0]))
    assert expand_label_words(FakeBackend(), [" bad", " good"], 1) == ([[" bad"], [" good"]],
                                                                       "none")


def test_logprobs_read_off_hidden_states_are_a_log_softmax() -> None:
    from blackbox.methods.mpd.features import LogprobsFromHidden

    rng = np.random.default_rng(0)
    table, h = rng.standard_normal((6, 4)), rng.standard_normal((3, 4))
    logits = h @ table.T
    want = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert np.allclose(LogprobsFromHidden(table, [4, 1])(h), want[:, [4, 1]], atol=1e-5)


def test_logprobs_from_hidden_needs_a_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(BbxError, match="decode needs vocabulary .*logprobs_from_hidden: false"):
        _fit(tmp_path, logprobs_from_hidden=True)


# -- fit → save → load → predict ----------------------------------------------------------------

def _fit(tmp_path: Path, **fields):
    return decode_fit(task="sst-2", shots=4, seed=13, backend=FAKE, test_limit=24,
                      output_dir=str(tmp_path), progress=False, **fields)


def test_fit_save_load_predict_round_trip(tmp_path: Path) -> None:
    fit = _fit(tmp_path, neighbours=3, compare=["zero-shot", "zero-shot-cal", "dect", "mpd-mean",
                                                "mpd-nocal", "mpd-1word"])
    s = fit.summary
    assert s["decoder"] == "mpd" and s["n_train"] == 8 and s["n_eval"] == 24
    assert set(s["variants"]) == {"mpd", "zero-shot", "zero-shot-cal", "dect", "mpd-mean",
                                  "mpd-nocal", "mpd-1word"}
    # DecT's λ is tuned on dev over the same grid as MPD's β, not fixed at 1 / shots
    dect = s["variants"]["dect"]
    assert set(dect["dev_accuracy_by_beta"]) == {str(b) for b in DecoderSpec().betas}
    assert dect["cal_weight"] in DecoderSpec().betas
    assert s["variants"]["zero-shot-cal"]["queries_per_example"] == 3
    assert s["variants"]["mpd-nocal"]["cal_weight"] == 0.0
    assert s["queries_per_example"] == 6 and s["variants"]["dect"]["queries_per_example"] == 2
    assert s["fit_s"] < 10
    path = Path(s["decoder_file"])
    assert path.suffix == ".safetensors" and path.stat().st_size < 200_000
    saved = load_decoder(path)
    assert saved.labels == ["negative", "positive"] and len(saved.templates) == 3
    assert [len(g) for g in saved.words] == [3, 3]

    # predict the evaluated texts again from the file: the same probabilities come back
    rows = [json.loads(x) for x in (fit.run_dir / "predictions.jsonl").read_text().splitlines()]
    from blackbox.data import get_task, load_split
    from blackbox.data.datasets import seeded_subset

    texts = [e.text for e in seeded_subset(load_split(get_task("sst-2"), "test"), 24)]
    assert [t[:200] for t in texts] == [r["text"] for r in rows]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"text": t, "label": r["gold"]}) + "\n"
                           for t, r in zip(texts, rows, strict=True)))
    pred = decode_predict(path, inp, output=tmp_path / "out.jsonl", output_dir=str(tmp_path),
                          progress=False)
    again = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["probs"] for r in again] == [r["probs"] for r in rows]
    assert pred.summary["n"] == 24
    assert pred.summary["accuracy"] == pytest.approx(s["accuracy"])
    assert pred.summary["usage"]["queries"] == 0  # every feature came from the cache


def test_dect_as_the_main_decoder(tmp_path: Path) -> None:
    s = _fit(tmp_path, decoder="dect").summary
    assert s["decoder"] == "dect" and s["queries_per_example"] == 2
    assert len(load_decoder(s["decoder_file"]).templates) == 1


def test_backend_without_hidden_states_uses_embeddings(tmp_path: Path) -> None:
    class NoHidden(FakeBackend):
        @property
        def capabilities(self) -> Capabilities:
            return Capabilities(hidden="none")

        def hidden(self, *a, **k):  # pragma: no cover - must not be called
            raise AssertionError("hidden called")

    recipe = parse_recipe({"method": "decode", "task": "sst-2", "shots": 2, "test_limit": 6,
                           "backend": {"kind": "fake"}, "output_dir": str(tmp_path)})
    s = run_recipe(recipe, backend=NoHidden(), progress=False).summary
    assert s["notes"]["hidden_route"].startswith("embed")
    assert load_decoder(s["decoder_file"]).hidden_route == "embed"


def test_predict_on_another_backend_is_refused(tmp_path: Path) -> None:
    s = _fit(tmp_path, neighbours=1).summary
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "a great film"}\n')
    with pytest.raises(BbxError, match="was fit on backend"):
        decode_predict(s["decoder_file"], inp, backend={"kind": "fake", "seed": 9},
                       output_dir=str(tmp_path), progress=False)


@pytest.mark.parametrize("data,msg", [
    ({"action": "predict"}, "needs decoder_file"),
    ({"action": "predict", "decoder_file": "d.safetensors"}, "needs input"),
    ({"templates": ["no placeholder"]}, "no {text} placeholder"),
    ({"betas": []}, "betas"),
    ({"compare": ["mdp"]}, "compare"),
])
def test_bad_recipes_are_one_line_errors(data: dict, msg: str) -> None:
    with pytest.raises(BbxError, match=msg) as e:
        parse_recipe({"method": "decode", **data})
    assert "\n" not in str(e.value)


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BbxError, match="not found"):
        load_decoder(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BbxError, match="not a safetensors file"):
        load_decoder(tmp_path / "junk.safetensors")
    with pytest.raises(BbxError, match="prompts=4"):
        decode_fit(prompts=4, backend=FAKE, output_dir=str(tmp_path), progress=False)
    s = _fit(tmp_path, neighbours=1).summary
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "meh"}\n')
    with pytest.raises(BbxError, match="name no class .*'meh'.*rows 1"):
        decode_predict(s["decoder_file"], bad, output_dir=str(tmp_path), progress=False)


def test_predict_backend_options_adjust_the_backend_it_was_fit_on(tmp_path: Path) -> None:
    s = _fit(tmp_path, neighbours=1).summary
    inp = tmp_path / "q.jsonl"
    inp.write_text('{"text": "a great film"}\n')
    price = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}
    run = decode_predict(s["decoder_file"], inp, backend={"kind": "fake", "pricing": price},
                         output_dir=str(tmp_path), progress=False)
    used = yaml.safe_load((run.run_dir / "recipe.yaml").read_text())["backend"]
    assert used["pricing"] == price and used["bias"] == FAKE["bias"]  # the rest: the file's
    # from the shell, an option without --backend is checked against the file's kind (fake)
    err = bbx("decode", "predict", "--decoder", s["decoder_file"], "--input", str(inp),
              "--model", "other", "--output-dir", str(tmp_path))
    assert err.returncode == 2 and "not of 'fake'" in err.stderr, err.stderr


def test_cli_fit_and_predict(tmp_path: Path) -> None:
    dec = tmp_path / "d.safetensors"
    fit = bbx("decode", "fit", "--task", "trec", "--shots", "2", "--backend", "fake",
              "--test-limit", "12", "--neighbours", "2", "--out", str(dec), "--json",
              "--no-progress", "--output-dir", str(tmp_path))
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["decoder_file"] == str(dec)
    inp = tmp_path / "q.jsonl"
    inp.write_text('{"text": "Who wrote Hamlet?"}\n{"text": "How far is the moon?"}\n')
    out = bbx("decode", "predict", "--decoder", str(dec), "--input", str(inp), "--json",
              "--no-progress", "--output-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 2
    err = bbx("decode", "predict", "--decoder", str(tmp_path / "nope"), "--input", str(inp))
    assert err.returncode == 2 and "not found" in err.stderr and "Traceback" not in err.stderr


# -- the real model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_end_to_end_fit_on_the_real_model(tmp_path: Path) -> None:
    from blackbox.backends.local import LocalBackend
    from blackbox.methods.mpd.features import LogprobsFromHidden

    backend = LocalBackend()
    recipe = parse_recipe({"method": "decode", "task": "sst-2", "shots": 2, "seed": 13,
                           "test_limit": 6, "neighbours": 3, "compare": ["zero-shot"],
                           "output_dir": str(tmp_path)})
    s = run_recipe(recipe, backend=backend, progress=False).summary
    assert s["n_eval"] == 6 and 0.0 <= s["accuracy"] <= 1.0
    assert s["notes"]["label_word_neighbours"] == "output-embeddings"
    words = flatten(s["label_words"])[0]
    assert len(words) == 6 and words[0] == " negative" and words[3] == " positive"
    saved = load_decoder(s["decoder_file"])
    assert saved.decoder.dim == 576 and saved.fingerprint.startswith("local:")
    # the local shortcut reads the same log-probs off the hidden states
    prompts = ["Review: a gorgeous, witty film\nSentiment:", "Question: Who is he?\nAnswer:"]
    derived = LogprobsFromHidden.for_backend(backend, words)(np.array(backend.hidden(prompts)))
    # the shortcut's head runs in fp32; in bf16 ("auto" on CPUs with native bf16) the
    # model's own LM head rounds its logits to ~3 significant digits
    tol = 1e-3 if backend.placement.dtype == "float32" else 0.1
    assert np.allclose(derived, backend.label_logprobs(prompts, words), atol=tol)


def test_dect_head_normalizes_and_starts_its_radii_from_the_data() -> None:
    import torch

    from blackbox.methods.mpd.decoders import _build_head

    head = _build_head(DecoderSpec(kind="dect", proj_dim=8), 12, 3, seed=0)
    h = torch.randn(9, 1, 12, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2] * 3)
    z = head.project(h)
    assert torch.allclose(z.norm(dim=1), torch.ones(9), atol=1e-6)  # features on the sphere
    assert torch.allclose(head.protos.norm(dim=1), torch.ones(3), atol=1e-6)
    head.init_radius(h, y)
    d = torch.cdist(z, head.protos)
    want = torch.stack([d[y == c, c].mean() for c in range(3)])
    assert torch.allclose(head.radius.detach(), want)  # not zero: the mean class distance
