"""LMTurk (``bbx distill``): acquisition, aggregation, budget, the portable student."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from blackbox.api import run_recipe
from blackbox.backends.fake import FakeBackend
from blackbox.errors import BbxError
from blackbox.methods.lmturk.acquisition import select
from blackbox.methods.lmturk.aggregate import aggregate, dawid_skene, majority, soft_mean
from blackbox.methods.lmturk.student import Student, fit_logreg, predict_rows
from blackbox.recipes import parse_recipe

# Rows on which the three uncertainty measures rank differently.
TABLE = np.array([
    [0.50, 0.50, 0.00],  # a perfect tie between two classes
    [0.90, 0.05, 0.05],  # confident
    [0.40, 0.30, 0.30],
    [0.34, 0.33, 0.33],  # almost uniform
    [0.60, 0.40, 0.00],
])


@pytest.mark.parametrize("name,expected", [
    # entropy: 0.693, 0.394, 1.089, 1.099, 0.673
    ("entropy", [3, 2, 0, 4, 1]),
    # 1 - max: 0.50, 0.10, 0.60, 0.66, 0.40
    ("least-confidence", [3, 2, 0, 4, 1]),
    # top-1 minus top-2: 0.00, 0.85, 0.10, 0.01, 0.20
    ("margin", [0, 3, 2, 4, 1]),
])
def test_uncertainty_acquisition_on_a_hand_made_table(name: str, expected: list[int]) -> None:
    feats = np.zeros((5, 2))
    assert select(name, TABLE, feats, 5, np.random.default_rng(0)).tolist() == expected
    assert select(name, TABLE, feats, 2, np.random.default_rng(0)).tolist() == expected[:2]


def test_entropy_and_least_confidence_differ_where_they_should() -> None:
    # [0.5, 0.25, 0.25] has the higher entropy, [0.45, 0.45, 0.10] the lower top probability
    probs = np.array([[0.5, 0.25, 0.25], [0.45, 0.45, 0.10]])
    feats = np.zeros((2, 1))
    rng = np.random.default_rng(0)
    assert select("entropy", probs, feats, 1, rng).tolist() == [0]
    assert select("least-confidence", probs, feats, 1, rng).tolist() == [1]
    assert select("margin", probs, feats, 1, rng).tolist() == [1]


def test_kmeans_picks_one_item_per_cluster_nearest_its_centre() -> None:
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = np.array([[0.0, 0.0], [0.5, 0.0], [-0.5, 0.0], [0.0, 0.6]])
    feats = np.vstack([c + offsets for c in centres])  # items 0, 4, 8 sit on the centres
    probs = np.full((len(feats), 2), 0.5)
    picked = select("kmeans", probs, feats, 3, np.random.default_rng(1))
    assert sorted(picked.tolist()) == [0, 4, 8]


def test_random_is_seeded_distinct_and_capped() -> None:
    probs = np.full((10, 2), 0.5)
    feats = np.zeros((10, 1))
    a = select("random", probs, feats, 4, np.random.default_rng(7))
    b = select("random", probs, feats, 4, np.random.default_rng(7))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 4
    assert sorted(select("random", probs, feats, 50, np.random.default_rng(0)).tolist()) \
        == list(range(10))
    with pytest.raises(BbxError, match="unknown acquisition 'entropi'.*entropy"):
        select("entropi", probs, feats, 1, np.random.default_rng(0))


def test_majority_breaks_ties_by_mean_probability_and_mean_averages() -> None:
    d = np.array([
        [[0.9, 0.1], [0.6, 0.4]],
        [[0.2, 0.8], [0.45, 0.55]],
    ])  # 2 workers, 2 items: item 0 a 1-1 tie, item 1 a 1-1 tie
    assert majority(d).tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert np.allclose(soft_mean(d), [[0.55, 0.45], [0.525, 0.475]])


def test_dawid_skene_recovers_a_planted_worker_confusion() -> None:
    rng = np.random.default_rng(0)
    n, c = 3000, 3
    truth = rng.choice(c, size=n, p=[0.5, 0.3, 0.2])
    planted = np.array([
        np.eye(c) * 0.85 + 0.05,  # a good worker
        [[0.7, 0.3, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]],  # confuses 0 -> 1
        [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]],  # a noisy worker
        [[0.1, 0.9, 0.0], [0.0, 0.9, 0.1], [0.2, 0.0, 0.8]],  # mostly says 1 for class 0
        np.eye(c) * 0.55 + 0.15,
    ])
    # worker j's label for item i: inverse-CDF sampling from row truth[i] of its confusion
    cdf = np.cumsum(planted[:, truth], axis=2)  # (workers, items, classes)
    labels = (rng.random((len(planted), n, 1)) > cdf).sum(axis=2).T  # (items, workers)
    ds = dawid_skene(labels, c)
    assert ds.converged
    assert np.abs(ds.confusion - planted).max() < 0.05
    assert np.abs(ds.priors - [0.5, 0.3, 0.2]).max() < 0.03
    dists = np.eye(c)[labels.T]  # (workers, items, classes), one-hot
    acc_ds = np.mean(aggregate(dists, "dawid-skene").argmax(1) == truth)
    acc_mv = np.mean(aggregate(dists, "majority").argmax(1) == truth)
    assert acc_ds > acc_mv + 0.03


def test_dawid_skene_handles_missing_labels_and_rejects_bad_ones() -> None:
    labels = np.array([[0, 0, -1], [1, -1, 1], [0, 1, 0]])
    ds = dawid_skene(labels, 2)
    assert ds.posterior.shape == (3, 2) and np.allclose(ds.posterior.sum(1), 1)
    with pytest.raises(BbxError, match="class indices"):
        dawid_skene(np.array([[0, 5]]), 2)


def test_calibration_divides_out_each_workers_bias() -> None:
    from blackbox.methods.lmturk.workers import calibrate

    dists = np.array([[[0.8, 0.2], [0.6, 0.4]], [[0.5, 0.5], [0.2, 0.8]]])
    bias = np.array([[0.8, 0.2], [0.5, 0.5]])  # worker 0 says class 0 to anything
    out = calibrate(dists, bias)
    assert np.allclose(out[0], [[0.5, 0.5], [0.6 / 0.8 / (0.6 / 0.8 + 2.0), 2.0 / 2.75]])
    assert np.allclose(out[1], dists[1])  # an unbiased worker is left alone


def test_gold_calibration_fits_the_offsets_that_undo_a_planted_bias() -> None:
    from blackbox.methods.lmturk.workers import apply_log_bias, fit_log_bias

    # a worker that answers [0.7, 0.3] to anything, on gold items half of each class: the
    # likelihood is highest when its answers become [0.5, 0.5], b1 - b0 = log(0.7 / 0.3)
    dists = np.tile([0.7, 0.3], (10, 1))
    b = fit_log_bias(dists, np.array([0, 1] * 5), l2=0.0)
    assert b[1] - b[0] == pytest.approx(np.log(0.7 / 0.3), abs=1e-4)
    assert np.allclose(apply_log_bias(dists[None], b[None]), 0.5, atol=1e-4)
    # the default L2 pulls the offsets toward 0 without flipping them
    shrunk = fit_log_bias(dists, np.array([0, 1] * 5))
    assert 0 < shrunk[1] - shrunk[0] < b[1] - b[0]


def test_soft_label_fit_matches_hard_fit_on_one_hot_targets() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4))
    y = (x[:, 0] + 0.3 * rng.standard_normal(60) > 0).astype(int)
    coef, intercept = fit_logreg(x, np.eye(2)[y], c=2.0)
    ref = LogisticRegression(C=2.0, max_iter=2000).fit(x, y)
    ours = Student(["a", "b"], coef, intercept, {}).predict_proba(x)
    assert np.allclose(ours, ref.predict_proba(x), atol=1e-4)


# -- a synthetic task the fake backend can label ---------------------------------------------

WORDS = {"alpha": "apple", "beta": "berry", "gamma": "grape"}
FILLER = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "on", "was", "for", "with",
          "as", "by", "at", "from", "this"]


def _write_task(tmp_path: Path, n: int = 90) -> dict:
    rng = np.random.default_rng(3)
    path = tmp_path / "fruit.csv"
    labels = list(WORDS)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            lab = labels[i % 3]
            words = list(rng.choice(FILLER, size=6)) + [WORDS[lab], f"w{i}"]
            rng.shuffle(words)
            w.writerow([" ".join(words), lab])
    return {"name": "fruit", "path": str(path), "labels": labels,
            "label_words": [f" {lab}" for lab in labels],
            "templates": ["Text: {text}\nLabel:", "{text}\nClass:"]}


def _oracle(prompt: str, label_words: Sequence[str]) -> list[float]:
    """A worker that reads the item (the last block of the prompt) and is right 80% of the
    time; a worker with the second template says 'alpha' for 'gamma'. Content-free inputs
    (calibration) get a bias towards 'alpha'."""
    query = prompt.split("\n\n")[-1]
    logits = [0.0] * len(label_words)
    right = next((k for k, lab in enumerate(WORDS) if WORDS[lab] in query), None)
    if right is None:
        return [0.0, -1.0, -1.0]
    if query.rstrip().endswith("Class:") and right == 2:
        right = 0
    if sum(map(ord, query)) % 5 == 0:
        right = (right + 1) % len(label_words)
    logits[right] = 3.0
    return [x - 1.0 for x in logits]


def _recipe(tmp_path: Path, **over) -> dict:
    # an explicit cache_dir: module-scoped runs start before the per-test cache fixture
    return {"method": "distill", "task": _write_task(tmp_path), "shots": 2, "workers": 3,
            "batch": 5, "queries": 40, "demos_per_class": 1, "backend": {"kind": "fake"},
            "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"), **over}


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory):
    """One small distill run on the fake backend, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("distill")
    # 40 is not a multiple of 3 workers x 5 items: the last round must shrink, not overshoot
    return run_recipe(_recipe(tmp), backend=FakeBackend(fn=_oracle), progress=False)


def test_distill_never_exceeds_the_query_budget_and_writes_its_artefacts(distilled) -> None:
    s, rd = distilled.summary, distilled.run_dir
    # 9 calibration queries (3 content-free inputs x 3 workers) come with the first round
    assert s["queries"] <= 40 and s["queries"] == 3 * s["labelled"] + 9 == 39
    evaluation = s["workers_eval"]  # the workers on the evaluation set, paid separately
    assert s["usage"]["by_verb"]["label_logprobs"] <= 40 + evaluation["queries"]
    assert evaluation["queries"] == 3 * min(s["eval"], 200)
    assert evaluation["calibration_queries"] == 9 and s["calibrated"]
    assert len(evaluation["per_worker"]) == 3
    assert evaluation["mean"] >= 0.6  # the scripted workers are right about 80% of the time
    rounds = [json.loads(x) for x in (rd / "rounds.jsonl").read_text().splitlines()]
    assert [r["queries"] for r in rounds] == [0, 24, 39]
    for name in ("student.json", "workers.json", "label_noise.jsonl", "label_noise.md",
                 "learning_curve.png", "summary.json"):
        assert (rd / name).is_file(), name
    assert s["label_accuracy"]["dawid-skene"] >= s["label_accuracy"]["majority"]
    noise = [json.loads(x) for x in (rd / "label_noise.jsonl").read_text().splitlines()]
    assert len(noise) == s["labelled"]
    assert noise[0]["disagreement"] >= noise[-1]["disagreement"]


def test_gold_calibration_is_paid_from_the_budget_and_recorded(tmp_path) -> None:
    from blackbox.methods.lmturk.plan import plan

    recipe = _recipe(tmp_path, gold_calibration=True, eval_workers=False)
    res = run_recipe(recipe, backend=FakeBackend(fn=_oracle), progress=False)
    s = res.summary
    # 6 gold examples (2 per class), 3 of them each worker's demonstrations: 3 x 3 gold
    # calibration queries beside the 9 content-free ones, all with the first round
    assert s["gold_calibrated"] and s["calibrated"]
    assert s["queries"] == 3 * s["labelled"] + 18 == 39 and s["labelled"] == 7
    rounds = [json.loads(x) for x in (res.run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["queries"] for r in rounds] == [0, 33, 39]
    stages = {st.name: st.queries for st in plan(parse_recipe(recipe), FakeBackend())}
    assert stages["calibration"] == 9 and stages["gold calibration"] == 9
    assert stages["annotation"] == 3 * 7
    workers = json.loads((res.run_dir / "workers.json").read_text())
    # the second template's worker says 'alpha' for 'gamma': its fit lowers 'alpha'
    offsets = workers[1]["gold_log_bias"]
    assert offsets["alpha"] < offsets["gamma"]


def test_hard_cap_stops_the_run_cleanly_before_overspending(tmp_path) -> None:
    recipe = _recipe(tmp_path, queries=300, budget={"max_queries": 100})
    s = run_recipe(recipe, backend=FakeBackend(fn=_oracle), progress=False).summary
    assert s["usage"]["queries"] <= 100  # embeddings + worker queries: every paid call
    assert "hard budget" in s["stopped"] and "worker_eval_skipped" in s["notes"]


def test_workers_see_gold_demos_with_their_own_templates(distilled) -> None:
    workers = json.loads((distilled.run_dir / "workers.json").read_text())
    assert len(workers) == 3 and {w["template"] for w in workers} == {
        "Text: {text}\nLabel:", "{text}\nClass:"}
    assert all(len(w["demos"]) == 3 for w in workers)  # one per class


def test_student_save_load_predict_round_trip(distilled, tmp_path) -> None:
    path = distilled.run_dir / "student.json"
    student = Student.load(path)
    assert student.labels == ["alpha", "beta", "gamma"]
    assert student.feature_model["kind"] == "backend"
    texts = ["the apple of it", "a berry in that", "grape was on"]
    rows = predict_rows(path, texts=texts)
    feats = np.asarray(FakeBackend().embed(texts))
    assert np.allclose([[r["probs"][k] for k in student.labels] for r in rows],
                       student.predict_proba(feats), atol=1e-4)
    # a saved copy predicts the same; files with labels get a gold column
    copy = student.save(tmp_path / "copy" / "s.json")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n"
                                               for t, lab in zip(texts, WORDS, strict=True)))
    again = predict_rows(copy, input=tmp_path / "in.jsonl")
    assert [r["label"] for r in again] == [r["label"] for r in rows]
    assert [r["gold"] for r in again] == list(WORDS)


def test_bbx_predict_command(distilled, tmp_path) -> None:
    from tests.conftest import bbx

    (tmp_path / "in.txt").write_text("the apple of it\na berry in that\n")
    proc = bbx("predict", "--student", str(distilled.run_dir / "student.json"),
               "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["the apple of it", "a berry in that"]
    assert "labelled 2 texts" in proc.stderr
    bad = bbx("predict", "--student", str(tmp_path / "in.txt"), "--input", str(tmp_path / "x"))
    assert bad.returncode == 2 and "not a bbx student" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("content,msg", [
    ("not json", "not JSON"),
    ('{"format": "other"}', "not a bbx student"),
    ('{"format": "bbx-student", "version": 9}', "version 9"),
    ('{"format": "bbx-student", "version": 1, "labels": ["a"], "coef": [[1.0]], '
     '"intercept": [0.0, 1.0], "feature_model": {}}', "shapes"),
])
def test_bad_student_files_are_one_line_errors(tmp_path, content: str, msg: str) -> None:
    f = tmp_path / "s.json"
    f.write_text(content)
    with pytest.raises(BbxError, match=msg) as e:
        Student.load(f)
    assert "\n" not in str(e.value)


def test_recipe_checks_worker_templates() -> None:
    with pytest.raises(BbxError, match="worker_templates"):
        parse_recipe({"method": "distill", "task": "sst-2", "worker_templates": [7]})
    with pytest.raises(BbxError, match="acquisition"):
        parse_recipe({"method": "distill", "acquisition": "entropi"})


POSITIVE = ["a warm, funny and moving film", "one of the best movies of the year",
            "the acting is superb and the story is gripping", "a delightful, charming comedy",
            "beautifully shot and wonderfully acted", "i loved every minute of it",
            "a triumph of storytelling", "smart, touching and very entertaining"]
NEGATIVE = ["a dull, lifeless and boring mess", "one of the worst movies of the year",
            "the acting is wooden and the plot makes no sense", "a tedious, unfunny comedy",
            "badly shot and poorly acted", "i hated every minute of it",
            "a complete waste of time", "stupid, clumsy and very annoying"]


@pytest.mark.slow
def test_small_distill_on_the_real_model(tmp_path) -> None:
    data = tmp_path / "reviews.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for pos, neg in zip(POSITIVE, NEGATIVE, strict=True):
            w.writerow([pos, "positive"])
            w.writerow([neg, "negative"])
    task = {"name": "reviews", "path": str(data), "labels": ["negative", "positive"],
            "label_words": [" negative", " positive"],
            "templates": ["Review: {text}\nSentiment:"]}
    result = run_recipe({"method": "distill", "task": task, "shots": 2, "workers": 2,
                         "demos_per_class": 1, "batch": 2, "queries": 14, "eval_workers": True,
                         "backend": {"kind": "local"}, "output_dir": str(tmp_path / "runs")},
                        progress=False)
    s = result.summary
    # 6 calibration queries (2 workers x 3 content-free inputs) + 2 rounds of 2 items x 2
    assert s["features"] == "minilm" and s["queries"] == 14 and s["labelled"] == 4
    assert s["usage"]["by_verb"]["label_logprobs"] <= 14 + s["workers_eval"]["queries"]
    assert 0.0 <= s["accuracy"] <= 1.0 and s["workers_eval"]["tokens"] > 0
    rows = predict_rows(result.run_dir / "student.json", texts=["a wonderful film"])
    assert rows[0]["label"] in ("negative", "positive")


def test_bbx_distill_command_on_the_fake_backend(tmp_path) -> None:
    from tests.conftest import bbx

    proc = bbx("distill", "--task", "bbc-news", "--backend", "fake", "--budget", "30",
               "--batch", "4", "--pool-limit", "40", "--eval-limit", "20", "--json",
               "--no-progress", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["method"] == "distill" and s["queries"] <= 30 and s["aggregation"] == "mean"
    assert Path(s["student"]).is_file()
    bad = bbx("distill", "--task", "bbc-news", "--backend", "fake", "--acquisition", "entropi")
    assert bad.returncode == 2 and "acquisition" in bad.stderr and "Traceback" not in bad.stderr


def test_fine_tuned_student_and_whole_pool_reference(tmp_path: Path) -> None:
    from blackbox.api import predict
    from blackbox.stats import parse_correct

    res = run_recipe(_recipe(tmp_path, student="finetune", finetune_epochs=1, whole_pool=True,
                             eval_workers=False), backend=FakeBackend(fn=_oracle),
                     progress=False)
    s = res.summary
    ft, whole = s["finetuned"], s["whole_pool"]
    n_eval = s["eval"]
    # accuracies are the means of the per-item results the reports pair up
    assert ft["accuracy"] == round(float(parse_correct(ft["correct"]).mean()), 4)
    assert len(ft["gold_only_correct"]) == len(ft["correct"]) == n_eval
    assert whole["items"] == s["pool"] and whole["queries"] == 3 * s["pool"]
    assert len(whole["correct"]) == n_eval
    # the fine-tuned student is a folder bbx predict reads like the linear one
    folder = res.run_dir / "student-finetuned"
    rows = predict(folder, texts=["apple pie", "a grape"])
    assert [sorted(r["probs"]) for r in rows] == [sorted(s_ for s_ in WORDS)] * 2
