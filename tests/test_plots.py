"""``bbx plot``: a PNG of the expected size for each kind of run that has curves, several
runs on one axis, and a one-line error (exit 2) for a run with nothing to plot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, bbx

from blackbox.api import plot, run_recipe
from blackbox.errors import BbxError
from blackbox.plots import DPI, FIGSIZE, Panel, Series, draw

CLAPS = REPO / "results/claps-runs/20261201-071706-claps-greedy-sst-2-s42"
CLAPS_2 = REPO / "results/claps-runs/20261201-071803-claps-genetic-sst-2-s42"
LMTURK = [REPO / f"results/lmturk-runs/agnews-s13-{a}" for a in ("entropy", "random", "margin")]
EVAL = REPO / "results/own-data-runs/zero-shot/20261201-205209-eval-own-task-s42"
EXPECTED = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))  # width, height in pixels


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, read back with matplotlib."""
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    return image.shape[1], image.shape[0]


def _needs(*paths: Path) -> None:
    for p in paths:
        if not p.is_dir():
            pytest.skip(f"{p} is not in this checkout")


@pytest.fixture(scope="module")
def merge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Evo-Merging run on the fake backend (two stages of trial logs)."""
    tmp = tmp_path_factory.mktemp("merge")
    return run_recipe(REPO / "recipes" / "merge-dry-run.yaml",
                      overrides=[f"output_dir={tmp}", "test_limit=10", f"cache_dir={tmp}/c",
                                 "stage1.evaluations=8", "stage2.evaluations=8"],
                      progress=False).run_dir


def test_search_prompt_run_plots_from_the_cli(tmp_path: Path) -> None:
    _needs(CLAPS)
    out = tmp_path / "claps.png"
    proc = bbx("plot", str(CLAPS), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert png_size(out) == EXPECTED


def test_merge_run_plots_each_stage(merge_run: Path, tmp_path: Path) -> None:
    out = plot([merge_run], tmp_path / "merge.png")
    assert png_size(out) == EXPECTED


def test_distill_learning_curves_per_acquisition_on_one_axis(tmp_path: Path) -> None:
    _needs(*LMTURK)
    out = plot(LMTURK, tmp_path / "lmturk.png")
    assert png_size(out) == EXPECTED
    assert png_size(plot(LMTURK[:1], tmp_path / "one.png")) == EXPECTED


def test_two_search_runs_share_an_axis_and_default_next_to_the_run(tmp_path: Path) -> None:
    _needs(CLAPS, CLAPS_2)
    a, b = tmp_path / CLAPS.name, tmp_path / CLAPS_2.name
    shutil.copytree(CLAPS, a)
    shutil.copytree(CLAPS_2, b)
    one = plot([a])
    assert one == tmp_path / f"{a.name}.png" and png_size(one) == EXPECTED
    both = plot([a, b])
    assert both == tmp_path / f"{a.name}+1.png" and png_size(both) == EXPECTED


def test_chain_plots_the_steps_that_have_curves(tmp_path: Path) -> None:
    chain = {"name": "c", "task": "sst-2", "backend": {"kind": "fake"},
             "output_dir": str(tmp_path / "runs"),
             "steps": [{"name": "zero", "method": "eval", "limit": 10},
                       {"name": "search", "method": "search-prompt", "clusters": 0,
                        "vocab": ["great", "awful", "film", "plot"], "length": 2,
                        "queries": 200, "percentile": 50, "test_limit": 10}]}
    run_dir = run_recipe(chain, progress=False).run_dir
    assert png_size(plot([run_dir], tmp_path / "chain.png")) == EXPECTED


def test_a_run_with_nothing_to_plot_is_a_one_line_error(merge_run: Path) -> None:
    _needs(EVAL, *LMTURK)
    proc = bbx("plot", str(EVAL))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "nothing to plot" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(BbxError, match="measure different things"):
        plot([merge_run, LMTURK[0]])


def test_draw_sizes_multi_panel_figures(tmp_path: Path) -> None:
    panels = [Panel(series=[Series([1, 2, 4], [0.5, 0.6, 0.7], label="x")], log2_x=True,
                    xticks=[1, 2, 4]) for _ in range(3)]
    out = draw(panels, tmp_path / "sub" / "p.png", figsize=(9.6, 3), dpi=100)
    assert png_size(out) == (960, 300)
