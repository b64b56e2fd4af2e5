"""A user's own data: the one reader, tasks from train/dev/test files on every method, the
leak guard, the same test items for every method, clean failures (fake backend)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import bbx

from blackbox.api import check_task, run_recipe
from blackbox.data.datasets import load_split, read_examples, seeded_subset
from blackbox.data.files import infer_labels, read_table
from blackbox.data.leak import LeakError, normalize
from blackbox.errors import BbxError
from blackbox.recipes import parse_recipe

POS = ["a warm and funny film", "the best movie of the year", "superb acting, a gripping story",
       "a delightful comedy", "beautifully shot", "i loved every minute", "a triumph",
       "smart and touching", "wonderfully acted", "great fun"]
NEG = ["a dull mess", "the worst film in years", "flat acting and a silly plot",
       "a tedious bore", "ugly to look at", "i hated every minute", "a disaster",
       "dumb and cold", "badly acted", "no fun at all"]


def write_task(root: Path) -> dict[str, Path]:
    """train.csv (BOM, names), dev.tsv (`sentence` header, indices), test.jsonl (1.0 labels)."""
    root.mkdir(parents=True, exist_ok=True)
    train, dev, test = root / "train.csv", root / "dev.tsv", root / "test.jsonl"
    with train.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for p, n in zip(POS[:6], NEG[:6], strict=True):
            w.writerow([p, "positive"])
            w.writerow([n, "Negative"])  # any case names the class
    dev.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in
                                                  [(POS[6], 1), (NEG[6], 0), (POS[7], 1),
                                                   (NEG[7], 0)]))
    test.write_text("".join(json.dumps({"text": t, "label": float(lab)}) + "\n"
                            for t, lab in [(POS[8], 1), (NEG[8], 0), (POS[9], 1), (NEG[9], 0)]))
    return {"train": train, "dev": dev, "test": test}


def spec(files: dict[str, Path], **over: object) -> dict:
    return {"name": "reviews", **{k: str(v) for k, v in files.items()}, **over}


def test_one_reader_for_every_format(tmp_path: Path) -> None:
    files = write_task(tmp_path)
    tables = [read_table(p) for p in files.values()]
    assert infer_labels(tables) == ("Negative", "positive")
    labels = ("negative", "positive")
    assert [e.label for e in read_examples(files["train"], labels)][:2] == [1, 0]  # BOM gone
    assert [e.label for e in read_examples(files["dev"], labels)] == [1, 0, 1, 0]
    assert [e.label for e in read_examples(files["test"], labels)] == [1, 0, 1, 0]
    tabbed = tmp_path / "tabbed.csv"  # tabs in a .csv: the delimiter is sniffed
    tabbed.write_text('Text\tLabel\nsays "hi" twice\tpositive\n')
    assert read_examples(tabbed, labels)[0].text == 'says "hi" twice'


@pytest.mark.parametrize(("content", "message"), [
    ("text,label\nfine,positive\n   ,negative\n", r"1 empty text\(s\) \(rows 2\)"),
    ("text,label\nfine,meh\n", r"1 label\(s\) name no class \(values 'meh'; rows 1\)"),
    ("text,label\nfine,7\n", "name no class"),
    ("words,label\nfine,positive\n", "must name the columns"),
    ("text,label\nfine\n", "line 2: 1 fields where the header has 2"),
])
def test_bad_rows_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(BbxError, match=message):
        read_examples(f, ("negative", "positive"))


def test_integer_labels_need_names(tmp_path: Path) -> None:
    f = tmp_path / "train.tsv"
    f.write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    with pytest.raises(BbxError, match=r"class indices \(0..1\): name the 2 classes"):
        parse_recipe({"method": "eval", "task": {"train": str(f), "test": str(f)}}).get_task()


def test_splits_from_files_and_a_dev_split_said_in_the_notes(tmp_path: Path) -> None:
    files = write_task(tmp_path)
    task = parse_recipe({"method": "eval", "task": spec(files)}).get_task()
    assert task.labels == ("Negative", "positive") and task.label_words == (" Negative",
                                                                            " positive")
    assert [len(load_split(task, s)) for s in ("train", "dev", "test")] == [12, 4, 4]
    no_dev = {k: v for k, v in files.items() if k != "dev"}
    task = parse_recipe({"method": "eval", "task": spec(no_dev, labels=["negative",
                                                                        "positive"])}).get_task()
    train, dev = load_split(task, "train", seed=1), load_split(task, "dev", seed=1)
    # a seeded 25% of each class (6 -> 2) is dev, disjoint from train
    assert len(train) == 8 and len(dev) == 4 and sorted(e.label for e in dev) == [0, 0, 1, 1]
    assert not {e.text for e in train} & {e.text for e in dev}
    info = check_task(spec(no_dev))
    assert info["splits"]["dev"]["per_class"] == {"Negative": 2, "positive": 2}
    assert "seeded 25%" in info["notes"]["dev_split"] and info["overlap"] == []


def test_one_file_keeps_a_held_out_test_part(tmp_path: Path) -> None:
    f = tmp_path / "all.jsonl"
    f.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n"
                         for p, n in zip(POS, NEG, strict=True)
                         for t, lab in ((p, "positive"), (n, "negative"))))
    task = parse_recipe({"method": "eval", "task": {"path": str(f)}, "shots": 4}).get_task()
    test = {e.text for e in load_split(task, "test")}
    fit = {e.text for s in ("train", "dev") for e in load_split(task, s, 4, 42)}
    assert len(test) == 4 and not test & fit  # 20% of each class, never trained on


def test_every_method_runs_on_own_files_and_reports_the_test_file(tmp_path: Path) -> None:
    files = write_task(tmp_path / "data")
    fake = {"kind": "fake"}
    out = str(tmp_path / "runs")
    base = {"task": spec(files), "backend": fake, "output_dir": out}
    ev = run_recipe({"method": "eval", **base}, progress=False).summary
    assert (ev["split"], ev["n"]) == ("test", 4)
    claps = run_recipe({"method": "search-prompt", **base, "vocab": ["great", "awful", "film",
                                                                     "plot", "fun"],
                        "clusters": 0, "length": 2, "queries": 300, "percentile": 50},
                       progress=False).summary
    assert claps["test"]["n"] == 4 and claps["train"]["n"] == 12
    dec = run_recipe({"method": "decode", **base, "neighbours": 1, "prompts": 1},
                     progress=False).summary
    assert (dec["eval_split"], dec["n_eval"], dec["n_train"], dec["n_dev"]) == ("test", 4, 12, 4)
    pool = tmp_path / "data" / "pool.txt"
    pool.write_text("an unseen review\nanother one\nthe third text\n")
    lm = run_recipe({"method": "distill", **base, "task": spec({**files, "pool": pool}),
                     "shots": 2, "workers": 2, "batch": 2, "queries": 8, "demos_per_class": 1},
                    progress=False).summary
    assert (lm["eval"], lm["gold"], lm["pool_source"]) == (4, 12, "file:pool.txt")
    with pytest.raises(BbxError, match="needs unlabelled texts to label: give a pool file"):
        run_recipe({"method": "distill", **base}, progress=False)
    from blackbox.backends.fake import FakeBackend

    zoo = FakeBackend(adapter_bias={"a": {" positive": 1.0}, "b": {" Negative": 1.0}})
    mg = run_recipe({"method": "merge", **base, "variant": "uniform", "user_examples": 8},
                    backend=zoo, progress=False).summary
    # user examples from train + dev (4 per class), the whole test file scored
    assert (mg["user"]["n"], mg["test"]["n"]) == (8, 4)


def test_the_cli_takes_own_files(tmp_path: Path) -> None:
    files = write_task(tmp_path / "data")
    res = bbx("eval", "--train", str(files["train"]), "--test", str(files["test"]),
              "--backend", "fake", "--json", "--no-progress", "--output-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 4
    res = bbx("task", "check", str(files["train"]), str(files["dev"]), str(files["test"]),
              "--json")
    assert res.returncode == 0, res.stderr
    assert {k: v["n"] for k, v in json.loads(res.stdout)["splits"].items()} == {
        "train": 12, "dev": 4, "test": 4}
    res = bbx("eval", "--task", "my-task", "--backend", "fake")
    assert res.returncode != 0 and "--train FILE --test FILE" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_test_text_in_train_is_refused_unless_allowed(tmp_path: Path) -> None:
    files = write_task(tmp_path / "data")
    with files["train"].open("a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([POS[8].upper() + " !", "positive"])  # same text, normalized
    base = {"method": "decode", "task": spec(files), "backend": {"kind": "fake"},
            "neighbours": 1, "prompts": 1, "output_dir": str(tmp_path / "runs")}
    with pytest.raises(LeakError, match="leak: 1 of 4 test texts are also in train"):
        run_recipe(base, progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    s = run_recipe({**base, "allow_overlap": True}, progress=False).summary
    assert s["notes"]["overlap"] == [{"fit": "train", "held_out": "test", "count": 1, "of": 4,
                                      "example": POS[8]}]


def test_drop_overlap_leaves_the_shared_texts_out_of_what_each_method_fits(
        tmp_path: Path) -> None:
    files = write_task(tmp_path / "data")
    with files["train"].open("a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([POS[8].upper() + " !", "positive"])  # a test text, normalized
    pool = tmp_path / "data" / "pool.txt"
    pool.write_text(f"an unseen review\n{NEG[9].upper()} !\nthe third text\n")
    base = {"task": spec({**files, "pool": pool}), "backend": {"kind": "fake"},
            "output_dir": str(tmp_path / "runs"), "drop_overlap": True}
    claps = run_recipe({"method": "search-prompt", **base, "vocab": ["great", "awful", "film",
                                                                     "plot", "fun"],
                        "clusters": 0, "length": 2, "queries": 300, "percentile": 50},
                       progress=False).summary
    assert claps["notes"]["dropped_overlap"] == {"train": 1}
    assert claps["train"]["n"] == 12 and "overlap" not in claps["notes"]
    dec = run_recipe({"method": "decode", **base, "neighbours": 1, "prompts": 1},
                     progress=False).summary
    assert dec["notes"]["dropped_overlap"] == {"train": 1} and dec["n_train"] == 12
    lm = run_recipe({"method": "distill", **base, "shots": 2, "workers": 2, "batch": 2,
                     "queries": 4, "demos_per_class": 1}, progress=False).summary
    assert lm["notes"]["dropped_overlap"] == {"gold examples": 1, "pool": 1}
    assert (lm["gold"], lm["pool"]) == (12, 2)


def test_sst2_test_is_inside_sst5_test_and_the_zoo_drops_it() -> None:
    from blackbox.data import get_task
    from blackbox.data.leak import overlaps
    from blackbox.methods.merge.zoo import AdapterSpec, TrainConfig, training_examples

    sst2 = load_split(get_task("sst-2"), "test")
    sst5 = load_split(get_task("sst-5"), "test")
    found = overlaps({"sst-5 test": sst5}, {"sst-2 test": sst2})
    assert found[0]["count"] == 1821 and found[0]["of"] == 1821
    exclude = {"sst-2 test": [e.text for e in sst2]}
    _, texts, dropped = training_examples(AdapterSpec("mr-x", "mr", 1, (" bad", " good")),
                                          TrainConfig(), exclude)
    # 429 are equal as written; 264 more differ only in tokenization ("kaufman's" against
    # "kaufman 's", ". . ." against "...")
    assert dropped == {"sst-2 test": 693} and len(texts) == 2000 - 693
    keys = {normalize(e.text) for e in sst2}
    assert not any(normalize(t) in keys for t in texts)


def test_the_same_limit_picks_the_same_test_items_in_every_method(tmp_path: Path) -> None:
    out = str(tmp_path / "runs")
    common = {"task": "sst-2", "backend": {"kind": "fake"}, "output_dir": out}
    ev = run_recipe({"method": "eval", **common, "limit": 30, "seed": 1}, progress=False)
    dec = run_recipe({"method": "decode", **common, "test_limit": 30, "seed": 2,
                      "neighbours": 1, "prompts": 1, "shots": 2}, progress=False)
    texts = [[json.loads(x)["text"] for x in (r.run_dir / "predictions.jsonl").read_text()
              .splitlines()] for r in (ev, dec)]
    assert texts[0] == texts[1] and len(texts[0]) == 30
    full = load_split(parse_recipe({"method": "eval"}).get_task(), "test")
    assert [e.text[:200] for e in seeded_subset(full, 30)] == texts[0]
    assert seeded_subset(full, 10) == [e for e in seeded_subset(full, 30)
                                     if e in seeded_subset(full, 10)]  # nested subsets


def test_failed_runs_leave_nothing_or_a_failed_summary(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    base = {"method": "eval", "backend": {"kind": "fake"}, "output_dir": str(out),
            "chunk": 10, "limit": 40}
    with pytest.raises(BbxError, match="not found"):
        run_recipe({**base, "task": {"train": str(tmp_path / "nope.csv"),
                                     "test": str(tmp_path / "nope.csv")}}, progress=False)
    assert not out.exists() or not any(out.iterdir())  # paid nothing: no run directory
    with pytest.raises(BbxError, match="budget"):
        run_recipe({**base, "budget": {"max_queries": 25}}, progress=False)
    (run,) = list(out.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["paid_rows"] == 20
    listing = bbx("ls", "runs", "--runs-dir", str(out))
    assert listing.stdout.startswith("failed") and "budget" in listing.stdout


def test_a_misspelled_key_inside_a_task_spec_suggests_its_keys(tmp_path: Path) -> None:
    with pytest.raises(BbxError, match=r"unknown key 'task.label_word' \(did you mean "
                                       r"'label_words'\?\)"):
        parse_recipe({"method": "eval", "task": {"train": "a.csv", "test": "b.csv",
                                                 "label_word": [" x"]}})
    with pytest.raises(BbxError, match="either path .* or train/dev/test files"):
        parse_recipe({"method": "eval", "task": {"path": "a.csv", "train": "b.csv"}})
