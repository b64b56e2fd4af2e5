"""Data: tasks, templates, splits and the k-shot sampler."""

from __future__ import annotations

from collections import Counter

import pytest

from blackbox.data import get_task, load_split
from blackbox.data.datasets import sample_k_shot
from blackbox.data.tasks import TASKS, render
from blackbox.errors import BbxError


def test_render_places_prompt_and_cuts_long_text() -> None:
    t = "{prompt}Review: {text}\nSentiment:"
    assert render(t, "good film") == "Review: good film\nSentiment:"
    assert render(t, "good film", "Rate this.") == "Rate this. Review: good film\nSentiment:"
    assert render("{text} Topic:", "a b c d", max_words=2) == "a b Topic:"


def test_every_task_has_three_templates_and_one_word_per_class() -> None:
    for task in TASKS.values():
        assert len(task.templates) >= 3
        assert len(task.label_words) == len(task.labels)
        assert all(w.startswith(" ") for w in task.label_words)


def test_unknown_task_names_the_closest() -> None:
    with pytest.raises(BbxError, match="did you mean 'sst-2'"):
        get_task("sst2")


@pytest.mark.parametrize("name,n_test,n_classes", [
    ("sst-2", 1821, 2), ("sst-5", 2210, 5), ("mr", 2000, 2), ("trec", 500, 6),
    ("agnews", 7600, 4),
])
def test_fewshot_splits(name: str, n_test: int, n_classes: int) -> None:
    task = get_task(name)
    assert len(load_split(task, "test")) == n_test
    train = load_split(task, "train", 16, 42)
    assert Counter(e.label for e in train) == {c: 16 for c in range(n_classes)}
    four = load_split(task, "train", 4, 42)
    assert Counter(e.label for e in four) == {c: 4 for c in range(n_classes)}
    assert set(four) <= set(train)  # sampled from the shipped split of that seed


def test_bbc_news_reads_sorted_classes_with_fixed_heldout_split() -> None:
    task = get_task("bbc-news")
    test, pool = load_split(task, "test"), load_split(task, "pool")
    # 2,225 files, of which some repeat an article verbatim: one copy of each is kept
    assert 2100 < len(test) + len(pool) <= 2225
    assert not {e.text for e in test} & {e.text for e in pool}
    train, dev = load_split(task, "train", 8, 1), load_split(task, "dev", 8, 1)
    assert Counter(e.label for e in train) == {c: 8 for c in range(5)}
    assert not {e.text for e in train} & {e.text for e in dev}
    assert load_split(task, "train", 8, 1) == train  # seeded
    assert load_split(task, "train", 8, 2) != train


def test_missing_data_folder_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("BBX_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BbxError, match="BBX_DATA_DIR"):
        load_split(get_task("sst-2"), "test")


def test_k_shot_sampler_is_seeded_and_balanced() -> None:
    from blackbox.data import Example

    data = [Example(f"t{i}", i % 3) for i in range(30)]
    a = sample_k_shot(data, 4, seed=7, n_classes=3)
    assert a == sample_k_shot(data, 4, seed=7, n_classes=3)
    assert Counter(e.label for e in a) == {0: 4, 1: 4, 2: 4}
    with pytest.raises(BbxError):
        sample_k_shot(data, 11, seed=7, n_classes=3)
