"""Progress: bars on a terminal; one plain line per stage elsewhere (CI, files), so a log
shows where time went, with no escape codes."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from conftest import REPO, bbx

from blackbox.api import run_recipe
from blackbox.progress import Stages, stage

LINE = re.compile(r"^\[(?P<label>[^\]]+)\] stage (?P<name>.+?): (?P<done>\d+)(/(?P<total>\d+))? "
                  r"(?P<unit>[a-z ]+), (?P<queries>\d+) queries, \d+\.\d s(, .*)?$")


def stage_lines(text: str) -> dict[str, re.Match[str]]:
    """The stage lines of a log, by stage name."""
    return {m["name"]: m for m in map(LINE.match, text.splitlines()) if m}


def test_one_plain_line_per_stage_with_items_queries_and_time() -> None:
    paid = [0]
    out = io.StringIO()
    stages = Stages("search-prompt", queries=lambda: paid[0], terminal=False, stream=out)
    with stages.stage("pruning", 500) as st:
        for _ in range(5):
            paid[0] += 200
            st.advance(100)
    stages.note("a note")
    text = out.getvalue()
    assert re.fullmatch(r"\[search-prompt\] stage pruning: 500/500 items, 1000 queries, "
                        r"\d+\.\d s\n\[search-prompt\] a note\n", text)
    assert "\x1b" not in text


def test_a_stage_ended_by_an_error_still_says_how_far_it_got() -> None:
    out = io.StringIO()
    stages = Stages("merge", terminal=False, stream=out)
    with pytest.raises(RuntimeError), stages.stage("stage1 (cma)", 40, unit="trials") as st:
        st.update(16, info="best 0.81")
        raise RuntimeError("budget")
    (m,) = stage_lines(out.getvalue()).values()
    assert m["done"] == "16" and m["total"] == "40" and m["unit"] == "trials"
    assert out.getvalue().rstrip().endswith(", best 0.81")


def test_terminal_mode_draws_bars_and_keeps_the_stage_lines() -> None:
    out = io.StringIO()
    stages = Stages("eval", terminal=True, stream=out)
    with stages.stage("test", 10) as st:
        st.advance(10)
    assert "\x1b" in out.getvalue()  # a live bar was drawn
    assert "[eval] stage test: 10/10 items" in out.getvalue()


def test_disabled_and_absent_displays_print_nothing(capsys: pytest.CaptureFixture) -> None:
    with Stages("x", enabled=False).stage("a", 3) as st:
        st.advance(3)
    with stage(None, "b", 2) as st:
        st.advance(2)
    assert capsys.readouterr().err == ""


def test_bbx_run_logs_each_stage_of_a_search_plainly(tmp_path: Path) -> None:
    proc = bbx("run", str(REPO / "recipes" / "claps-dry-run.yaml"), "--set",
               f"output_dir={tmp_path}", "--set", f"cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr
    lines = stage_lines(proc.stderr)
    assert {"clustering", "pruning", "search (greedy)", "dev", "test"} <= set(lines)
    assert all(m["label"] == "search-prompt" for m in lines.values())
    assert lines["pruning"]["done"] == lines["pruning"]["total"]
    assert int(lines["pruning"]["queries"]) > 0  # a fresh cache: pruning pays


def test_merge_and_chain_runs_log_their_stages(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    run_recipe(REPO / "recipes" / "merge-dry-run.yaml",
               overrides=[f"output_dir={tmp_path}", "test_limit=10", "stage1.evaluations=8",
                          "stage2.evaluations=8"])
    err = capsys.readouterr().err
    assert {"stage1 (cma)", "stage2 (cma)", "test"} <= set(stage_lines(err))
    chain = {"name": "c", "task": "sst-2", "backend": {"kind": "fake"},
             "output_dir": str(tmp_path / "runs"),
             "steps": [{"name": "zero", "method": "eval", "limit": 10}]}
    run_recipe(chain)
    err = capsys.readouterr().err
    assert "[c] step 1/1 zero (eval)" in err and "[eval] stage test: 10/10 items" in err
    assert "\x1b" not in err


def test_distill_logs_its_rounds_and_stages(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    from test_lmturk import _oracle, _recipe

    from blackbox.backends.fake import FakeBackend

    run_recipe(_recipe(tmp_path), backend=FakeBackend(fn=_oracle))
    err = capsys.readouterr().err
    lines = stage_lines(err)
    (learning,) = [m for name, m in lines.items() if name.startswith("active learning")]
    assert learning["unit"] == "annotation queries" and learning["label"] == "distill"
    assert "[distill] round 0:" in err and "\x1b" not in err


def test_force_color_does_not_turn_a_log_file_into_bars(tmp_path: Path) -> None:
    proc = bbx("eval", "--task", "trec", "--backend", "fake", "--limit", "10",
               "--output-dir", str(tmp_path), env={"FORCE_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "[eval] stage test: 10/10 items" in proc.stderr and "\x1b" not in proc.stderr
