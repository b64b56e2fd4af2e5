"""Paired comparisons over test items (blackbox.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from blackbox.stats import correct_string, format_diff, paired_bootstrap, parse_correct


def test_correct_strings_round_trip() -> None:
    s = correct_string([0, 1, 2, 1], [0, 0, 2, 1])
    assert s == "1011"
    assert parse_correct(s).tolist() == [1, 0, 1, 1]


def test_paired_bootstrap_difference_and_interval() -> None:
    base = "0" * 50 + "1" * 50  # 50%
    other = "1" * 60 + "0" * 40  # 60%, right on items 0..59
    r = paired_bootstrap(base, other, n_boot=2000)
    assert r["diff"] == pytest.approx(0.10) and r["n"] == 100
    assert r["lo"] < 0.10 < r["hi"]
    # the same runs compared with themselves: no difference, no width
    same = paired_bootstrap(base, base, n_boot=200)
    assert (same["diff"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)
    assert format_diff({"diff": 0.1, "lo": -0.005, "hi": 0.2}) == "+10.0 [-0.5, +20.0]"
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap("01", "011")


def test_the_interval_narrows_with_more_items() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        a, b = rng.random(n) < 0.6, rng.random(n) < 0.7
        r = paired_bootstrap(a.astype(int), b.astype(int), n_boot=2000)
        widths.append(r["hi"] - r["lo"])
    assert widths[1] < widths[0] / 2  # ~1/sqrt(16) = 1/4 of the width


def test_pooled_bootstrap_over_seeds_and_the_verdict_words() -> None:
    from blackbox.stats import pooled_bootstrap, verdict

    # two seeds on the same 4 items: +50 and +0 points, mean +25
    pairs = [("0011", "1111"), ("0101", "0101")]
    r = pooled_bootstrap(pairs, same_items=True, n_boot=2000)
    assert r["diff"] == pytest.approx(0.25) and r["n"] == 4 and r["seeds"] == 2
    assert r["lo"] <= 0.25 <= r["hi"]
    # different items per seed: each seed resampled on its own, n counts them all
    s = pooled_bootstrap([("0" * 10, "1" * 10), ("00000", "11111")], same_items=False,
                         n_boot=500)
    assert (s["diff"], s["lo"], s["hi"], s["n"]) == (1.0, 1.0, 1.0, 15)
    with pytest.raises(ValueError, match="different numbers"):
        pooled_bootstrap([("01", "11"), ("011", "111")], same_items=True)
    assert verdict({"lo": 0.002, "hi": 0.1}) == "beats"
    assert verdict({"lo": -0.1, "hi": -0.0051}) == "loses to"
    # an interval printed as [+0.0, ...] holds zero as the reader sees it
    assert verdict({"lo": 0.0004, "hi": 0.1}) == "is not distinguishable from"
    assert verdict({"lo": -0.1, "hi": 0.1}) == "is not distinguishable from"
