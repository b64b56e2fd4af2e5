"""The merge report on a small grid made on the fake backend: every number is read from a
summary, the paired differences come from the runs' per-item results, runs from before the
leak guard are left out and said to be, cells from two machines are listed as such."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blackbox.api import run_recipe
from blackbox.stats import format_diff, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
FAKE = {"kind": "fake", "seed": 3, "bias": {"great": {" positive": 2.0}},
        "adapter_bias": {"pos": {" positive": 1.5, " negative": -0.5},
                         "neg": {" negative": 1.5}, "noise": {" positive": -2.0}}}
SMALL = {"stage1": {"evaluations": 8, "popsize": 4}, "stage2": {"evaluations": 8, "popsize": 4},
         "lorahub": {"optimizer": "ng:NGOpt", "evaluations": 4, "popsize": 1}}


def _zoo(loss: float) -> dict:
    spec = {"name": "pos", "task": "mr", "template": 1, "label_words": None, "seeds": None}
    return {"model": "m", "held_out": ["sst-2"], "adapters": {"pos": {
        "spec": spec, "train": {"steps": 100}, "examples": 7, "dropped_as_target_texts": {},
        "final_loss": loss, "seconds": 12.0}}}


def test_the_grid_keeps_its_zoo_description_and_refuses_another_build(tmp_path: Path) -> None:
    """Cells measured on two builds of the zoo must never land in one table."""
    import argparse

    sys.path.insert(0, str(REPO / "scripts"))
    from merge_grid import keep_zoo_description

    zoo, runs = tmp_path / "zoo", tmp_path / "runs"
    zoo.mkdir()
    runs.mkdir()
    (zoo / "zoo.json").write_text(json.dumps(_zoo(0.4321)))
    args = argparse.Namespace(zoo=str(zoo), model="default", runs=runs, adapters=None)
    keep_zoo_description(args)
    assert json.loads((runs / "zoo.json").read_text()) == _zoo(0.4321)
    keep_zoo_description(args)  # the same build: the grid resumes
    (zoo / "zoo.json").write_text(json.dumps(_zoo(0.5)))  # rebuilt elsewhere
    with pytest.raises(SystemExit, match="another build"):
        keep_zoo_description(args)
    # a subset for the adapter-count condition must name adapters the zoo holds
    args = argparse.Namespace(zoo=str(zoo), model="default", runs=tmp_path / "sub",
                              adapters=["pos", "typo"])
    with pytest.raises(SystemExit, match="--adapters names typo, not in the zoo"):
        keep_zoo_description(args)


def test_report_reads_every_number_from_the_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (42, 13):
        for variant in ("base", "uniform", "best-single", "evo", "lorahub"):
            name = f"sst-2-s{seed}-{variant}"
            run_recipe({"method": "merge", "task": "sst-2", "seed": seed, "variant": variant,
                        "user_examples": 16, "test_limit": 60, "backend": FAKE, "name": name,
                        "output_dir": str(runs), **SMALL}, run_dir=runs / name,
                       progress=False)
    stale = runs / "trec-s42-base"  # a run from before the leak guard
    stale.mkdir()
    (stale / "summary.json").write_text(json.dumps({"test": {"accuracy": 0.12345}}))
    (stale / "recipe.yaml").write_text("task: trec\nseed: 42\nvariant: base\n")
    manifest = runs / "sst-2-s13-evo" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["host"].update(cpu="Some CPU", cpu_units=["avx2"])
    manifest.write_text(json.dumps(data))

    # the zoo's description is the copy the grid keeps beside its runs (the zoo itself stays
    # in the user cache of the machine that built it)
    (runs / "zoo.json").write_text(json.dumps({**_zoo(0.4321), "recovered_from": "made up"}))
    out = tmp_path / "evo-merge.md"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "merge_report.py"), "--runs",
                          str(runs), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    assert "1 finished run(s) from before the guard are left out" in text
    assert "0.123" not in text
    assert "10 of 56 cells" in text and "trec s42 base" in text and "sst-2 s87 evo" in text
    assert "- Some CPU (avx2): 1 cells (sst-2 s13 ×1)" in text
    assert "float differences): sst-2 s13" in text
    assert "| pos | mr | 1 | task default | 7 | none | 100 | 0.432 | 12 |" in text
    assert "This description of the zoo was made up." in text
    # a recovered description means the zoo itself is gone: the missing cells cannot resume
    assert "The missing cells cannot resume" in text and "the zoo took 0.0 h to train" in text
    summaries = {v: json.loads((runs / f"sst-2-s42-{v}" / "summary.json").read_text())["test"]
                 for v in ("evo", "uniform")}
    evo_row = next(line for line in text.splitlines() if line.startswith("| **Evo-Merging**"))
    evo13 = json.loads((runs / "sst-2-s13-evo" / "summary.json").read_text())["test"]
    assert evo_row.split(" | ")[-1] == f"{summaries['evo']['accuracy']:.3f} |"  # acc s42
    assert evo_row.split(" | ")[-2] == f"{evo13['accuracy']:.3f}"  # acc s13
    want = format_diff(paired_bootstrap(summaries["uniform"]["correct"],
                                        summaries["evo"]["correct"]))
    row = next(line for line in text.splitlines() if line.startswith("| Evo − uniform"))
    assert row.split(" | ")[-1] == f"{want} |"  # seed 42 is the last column
    assert "## The adapter zoo" in text  # described from the copy beside the runs
    # Evo against LoraHub seed by seed: the user-loss pairs and the fit count are the runs'
    user = {(sd, v): json.loads((runs / f"sst-2-s{sd}-{v}" / "summary.json").read_text())
            ["user"]["loss"] for sd in (13, 42) for v in ("evo", "lorahub")}
    fit = sum(user[(sd, "evo")] < user[(sd, "lorahub")] for sd in (13, 42))
    line = next(line for line in text.splitlines() if "user-example loss Evo / LoraHub" in line)
    assert (f"s13 {user[(13, 'evo')]:.3f} / {user[(13, 'lorahub')]:.3f}; "
            f"s42 {user[(42, 'evo')]:.3f} / {user[(42, 'lorahub')]:.3f}") in line
    assert f"better in {fit} of 2 seeds" in line
    # the paper's ordering needs every variant of it: w/o sign never ran here
    assert "- sst-2: not measured yet (no finished run of evo-no-sign)." in text


def _cell(task: str, seed: int, variant: str, user_loss: float, correct: str,
          adapters: tuple[str, ...] = ("a", "b", "c")) -> dict:
    return {"recipe": {"task": task, "seed": seed, "variant": variant,
                       "stage1": {"evaluations": 100}, "stage2": {"evaluations": 200}},
            "summary": {"user": {"loss": user_loss, "n": 48},
                        "test": {"correct": correct, "loss": 0.5},
                        "adapter": {"adapters": list(adapters), "alpha": [1.0] * len(adapters),
                                    "beta": [0.25] * len(adapters)}}}


def test_conditions_name_the_one_the_evo_lorahub_counts_point_at() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from merge_report import conditions

    right, wrong = "1" * 200, "1" * 100 + "0" * 100  # a 50-point gap: the interval excludes 0
    cells = [
        # trec: Evo fit worse and tested worse at both seeds -> the search budget
        _cell("trec", 13, "evo", 1.3, wrong), _cell("trec", 13, "lorahub", 1.0, right),
        _cell("trec", 42, "evo", 1.2, wrong), _cell("trec", 42, "lorahub", 0.9, right),
        # sst-2: Evo fit better at both seeds, the same items right -> the user examples
        _cell("sst-2", 13, "evo", 0.2, right), _cell("sst-2", 13, "lorahub", 0.3, right),
        _cell("sst-2", 42, "evo", 0.1, right), _cell("sst-2", 42, "lorahub", 0.3, right),
    ]
    text = "\n".join(conditions(cells))
    assert "3 adapters, 48 user examples instead of 300, 300 evaluations instead of 1,200" in text
    assert "- trec: the search budget. Where Evo and LoraHub differ on test (2 of 2 seeds)" in text
    assert ("- sst-2: the number of user examples. Evo fit them better in 2 of 2 seeds, and "
            "the test accuracies differ in 0") in text
    assert ("Adapter count, search budget, number of user examples and model size were not "
            "varied.") in text


def test_a_varied_condition_is_set_beside_the_grid_on_the_same_seeds() -> None:
    """Fewer adapters: Evo - LoraHub under the change against the grid's, over the seeds both
    ran, and the conditions paragraph no longer says the adapter count was not varied."""
    sys.path.insert(0, str(REPO / "scripts"))
    from merge_report import conditions, varied

    right, half = "1" * 200, "1" * 100 + "0" * 100
    grid = [_cell("trec", sd, v, 1.0, c) for sd in (13, 42)
            for v, c in (("evo", half), ("lorahub", right))]
    two = [_cell("trec", sd, v, loss, c, adapters=("a", "b"))
           for sd in (13, 42, 87) for v, loss, c in (("evo", 0.8, right), ("lorahub", 0.9, half))]
    others = {"merge-runs-2-adapters": two}
    text = "\n".join(varied(grid, others))
    # seed 87 ran only in the changed grid: the comparison is over 13 and 42
    assert ("| 2 adapters (3 in the grid) | trec | 13, 42 | -50.0 [-57.0, -43.0] | "
            "+50.0 [+43.0, +57.0] | 2 of 2 |") in text
    assert ("- trec, 2 adapters (3 in the grid): Evo beats LoraHub (+50.0 [+43.0, +57.0]; in "
            "the grid, over the same seeds, Evo loses to it, -50.0 [-57.0, -43.0]): the gap "
            "moved +100.0 points toward Evo.") in text
    cond = "\n".join(conditions(grid, others))
    assert "Varied one at a time, measured (next section): adapter count." in cond
    assert "Search budget, number of user examples and model size were not varied." in cond
    # a budget change leaves LoraHub's cells as they were: the move is said to be Evo's own
    more = [_cell("trec", 13, "evo", 0.8, right), _cell("trec", 13, "lorahub", 0.9, right)]
    for c in more:
        c["recipe"]["stage2"] = {"evaluations": 1100}
    text = "\n".join(varied(grid, {"merge-runs-1200-evaluations": more}))
    assert ("the gap moved +50.0 points toward Evo; LoraHub's cells scored the same test "
            "items right as in the grid (the change does not reach it), so the move is Evo's "
            "own.") in text


def test_varied_grids_beside_the_runs_are_read_only_if_on_the_same_zoo(tmp_path: Path) -> None:
    """A grid that varied a condition on another build of the zoo is not comparable."""
    sys.path.insert(0, str(REPO / "scripts"))
    from merge_report import load_varied

    def grid(folder: Path, loss: float) -> None:
        (folder / "trec-s13-evo").mkdir(parents=True)
        (folder / "zoo.json").write_text(json.dumps(_zoo(loss)))
        (folder / "trec-s13-evo" / "summary.json").write_text(json.dumps({"leak_check": {}}))
        (folder / "trec-s13-evo" / "recipe.yaml").write_text("task: trec\nseed: 13\n")

    grid(tmp_path / "runs", 0.4)
    grid(tmp_path / "runs-6-adapters", 0.4)
    grid(tmp_path / "runs-1200-evaluations", 0.7)  # measured on another build
    assert list(load_varied(tmp_path / "runs", _zoo(0.4))) == ["runs-6-adapters"]
    # the varied grid's zoo built only as far as the adapters it merges: the same build
    whole = _zoo(0.4)
    whole["adapters"]["neg"] = {**whole["adapters"]["pos"], "final_loss": 0.3}
    assert list(load_varied(tmp_path / "runs", whole)) == ["runs-6-adapters"]


def test_a_rerun_with_nothing_changed_is_a_reproduction_check_not_a_condition() -> None:
    """Reruns of finished cells on a rebuilt zoo say whether they reproduced the grid's
    cells (the missing ones may then run on the rebuild); they are no varied condition."""
    sys.path.insert(0, str(REPO / "scripts"))
    from merge_report import reproduced, varied

    right, half = "1" * 200, "1" * 100 + "0" * 100
    grid = [_cell("trec", 13, "evo", 1.0, half), _cell("trec", 13, "lorahub", 0.9, right)]
    same = {"runs-rebuild-check": [_cell("trec", 13, "evo", 1.0, half)]}
    assert varied(grid, same) == []
    lines, exact = reproduced(grid, same)
    assert exact and lines[0].startswith(
        "Rerun of 1 cells of the grid with nothing changed (runs-rebuild-check: trec s13 evo): "
        "the same test items right and wrong in 1 of 1, the same mixture in 1 of 1")
    # a search that ends a rounding away (another CPU) still scores the same items right
    nudged = _cell("trec", 13, "evo", 1.0, half)
    nudged["summary"]["adapter"]["beta"][1] += 1e-5
    lines, exact = reproduced(grid, {"runs-rebuild-check": [nudged]})
    assert exact and "the same mixture in 0 of 1 (α and β moved by at most 1.0e-05)" in lines[0]
    moved = {"runs-rebuild-check": [_cell("trec", 13, "evo", 1.0, right)]}
    lines, exact = reproduced(grid, moved)
    assert not exact and "right and wrong in 0 of 1" in lines[0]


def test_the_ablation_claim_says_which_parts_help_from_the_intervals() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from merge_report import ablation_claim

    right, half = "1" * 200, "1" * 100 + "0" * 100
    cells = [_cell("trec", 13, "evo", 1.0, right), _cell("trec", 13, "evo-no-sign", 1.0, half),
             _cell("trec", 13, "evo-no-denoise", 1.0, right)]
    assert ablation_claim(cells, "trec") is None  # w/o scaling has not run
    cells.append(_cell("trec", 13, "evo-no-scale", 1.0, right))
    assert ablation_claim(cells, "trec") == (
        "- trec ablations (seed 13, pooled, points [95% CI]): Evo − Evo w/o sign (β ≥ 0) "
        "+50.0 [+43.0, +57.0]; Evo − Evo w/o denoising (β only, CMA-ES) +0.0 [+0.0, +0.0]; "
        "Evo − Evo w/o scaling (α only) +0.0 [+0.0, +0.0] — the paper's reading that each "
        "part helps holds for negative scales; no difference shown for denoising (stage 1), "
        "scaling (stage 2).")
    cells[0] = _cell("trec", 13, "evo", 1.0, "1" * 160 + "0" * 40)  # now below two ablations
    assert ablation_claim(cells, "trec").endswith(
        "part helps holds for negative scales; Evo did better without denoising (stage 1), "
        "scaling (stage 2).")
    cells[1] = _cell("trec", 13, "evo-no-sign", 1.0, "1" * 200)  # no part helps
    assert ablation_claim(cells, "trec").endswith(
        "part helps **does not hold** for any part; Evo did better without negative scales, "
        "denoising (stage 1), scaling (stage 2).")


def test_the_reproduce_command_names_every_flag_a_varied_grid_set() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from merge_report import _command

    stage = {"evaluations": 100}
    recipe = {"task": "sst-2", "seed": 13, "variant": "evo", "user_examples": 144,
              "user_seeds": [13, 42, 87], "adapters": ["a", "b"], "stage1": stage,
              "stage2": {"evaluations": 200}, "lorahub": {"evaluations": 40}}
    assert _command(recipe, "results/merge-runs-144-user-examples") == (
        "`scripts/merge_grid.py --tasks sst-2 --seeds 13 --runs "
        "results/merge-runs-144-user-examples --adapters a b --user-seeds 13 42 87 --variants "
        "evo --user-examples 144 --stage1 100 --stage2 200 --lorahub 40 "
        "--lock /tmp/bbx-heavy.lock`")
