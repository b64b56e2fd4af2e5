"""Build ``results/evo-merge.md`` from the merge grid's run directories (never typed numbers).

    .venv/bin/python scripts/merge_report.py [--runs results/merge-runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from merge_grid import DETERMINISTIC, SEEDS, TASKS, VARIANTS, same_adapters  # noqa: E402

from blackbox.runs import machines_lines  # noqa: E402

LABELS = {
    "base": "base model (no adapter)",
    "uniform": "uniform average (α=1, β=1/N)",
    "best-single": "best single adapter (by user loss)",
    "evo": "**Evo-Merging** (α then β, CMA-ES)",
    "lorahub": "LoraHub (β only, NGOpt, from 0)",
    "evo-no-sign": "Evo w/o sign (β ≥ 0)",
    "evo-no-denoise": "Evo w/o denoising (β only, CMA-ES)",
    "evo-no-scale": "Evo w/o scaling (α only)",
    "ties": "TIES (white-box, peft)",
    "dare": "DARE (white-box, peft)",
}


def load(runs: Path) -> tuple[list[dict], int]:
    """Finished cells (recipe + summary per run directory), and how many finished runs were
    left out because they ran before the leak guard (no ``leak_check`` in their summary)."""
    out, stale = [], 0
    for s in sorted(runs.glob("*/summary.json")):
        summary = json.loads(s.read_text())
        if summary.get("status") == "failed":
            continue
        if "leak_check" not in summary:
            stale += 1
            continue
        recipe = yaml.safe_load((s.parent / "recipe.yaml").read_text())
        out.append({"dir": s.parent, "recipe": recipe, "summary": summary})
    return out, stale


#: The baselines Evo-Merging is compared with item by item.
PAIRED = ("base", "uniform", "best-single", "lorahub", "evo-no-sign", "evo-no-denoise",
          "evo-no-scale")


def paired(cells: list[dict], task: str) -> list[str]:
    """Evo minus each baseline, per seed, on the same test items: points [95% CI]."""
    from blackbox.stats import format_diff, paired_bootstrap

    by = {(c["recipe"]["seed"], c["recipe"]["variant"]): (c["summary"].get("test") or {})
          for c in cells if c["recipe"]["task"] == task}
    seeds = sorted({s for s, _ in by})
    rows = []
    for v in PAIRED:
        cols = []
        for sd in seeds:
            a, b = by.get((sd, v), {}), by.get((sd, "evo"), {})
            if v in DETERMINISTIC:
                a = by.get((seeds[0], v), {})
            ok = "correct" in a and "correct" in b and len(a["correct"]) == len(b["correct"])
            cols.append(format_diff(paired_bootstrap(a["correct"], b["correct"])) if ok
                        else "-")
        if any(c != "-" for c in cols):
            rows.append(f"| Evo − {LABELS[v]} | " + " | ".join(cols) + " |")
    if not rows:
        return []
    return ([f"Evo-Merging minus each baseline on {task}'s test items, accuracy points with a "
             "95% bootstrap interval over the items (10,000 resamples), one column per seed:",
             "", "| comparison | " + " | ".join(f"s{s}" for s in seeds) + " |",
             "|---|" + "---:|" * len(seeds)] + rows + [""])


def _mean(xs: list[float]) -> str:
    import statistics

    if not xs:
        return "-"
    m = statistics.mean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.3f} ± {sd:.3f}" if len(xs) > 1 else f"{m:.3f}"


def _command(recipe: dict, runs: str | None = None) -> str:
    st1, st2, lh = recipe["stage1"], recipe["stage2"], recipe["lorahub"]
    return (f"`scripts/merge_grid.py --tasks {recipe['task']} --seeds {recipe['seed']} "
            + (f"--runs {runs} " if runs else "")
            + (f"--adapters {' '.join(recipe['adapters'])} " if recipe.get("adapters") else "")
            + (f"--user-seeds {' '.join(map(str, recipe['user_seeds']))} "
               if recipe.get("user_seeds") else "")
            + f"--variants {recipe['variant']} --user-examples {recipe['user_examples']} "
            + (f"--test-limit {recipe['test_limit']} " if recipe.get("test_limit") else "")
            + f"--stage1 {st1['evaluations']} "
            f"--stage2 {st2['evaluations']} --lorahub {lh['evaluations']} "
            "--lock /tmp/bbx-heavy.lock`")


def table(cells: list[dict], task: str) -> list[str]:
    rows = [c for c in cells if c["recipe"]["task"] == task]
    if not rows:
        return [f"### {task}", "", "No finished runs yet.", ""]
    seeds = sorted({c["recipe"]["seed"] for c in rows})
    out = [f"### {task}", "",
           "| variant | test acc (mean ± sd) | test loss | user loss | queries sent | paid "
           "| wall s | " + " | ".join(f"acc s{s}" for s in seeds) + " |",
           "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(seeds)]
    for v in VARIANTS:
        cs = [c for c in rows if c["recipe"]["variant"] == v]
        if not cs:
            continue
        acc = [c["summary"]["test"]["accuracy"] for c in cs if c["summary"].get("test")]
        loss = [c["summary"]["test"]["loss"] for c in cs if c["summary"].get("test")]
        user = [c["summary"]["user"]["loss"] for c in cs if c["summary"].get("user")]
        q = [c["summary"]["usage"]["queries"] for c in cs]
        sent = [c["summary"]["usage"]["queries"] + c["summary"]["usage"]["cached"] for c in cs]
        wall = [c["summary"]["run_wall_s"] for c in cs]
        by_seed = {c["recipe"]["seed"]: c["summary"].get("test") for c in cs}
        per = " | ".join(f"{by_seed[s]['accuracy']:.3f}" if by_seed.get(s) else "-"
                         for s in seeds)
        out.append(f"| {LABELS[v]} | {_mean(acc)} | {_mean(loss)} | {_mean(user)} | "
                   f"{sum(sent) / len(sent):.0f} | {sum(q) / len(q):.0f} | "
                   f"{sum(wall) / len(wall):.0f} | {per} |")
    return out + [""]


def _by_cell(cells: list[dict]) -> dict[tuple[str, int, str], dict]:
    """Each run's summary under its (task, seed, variant)."""
    return {(c["recipe"]["task"], c["recipe"]["seed"], c["recipe"]["variant"]): c["summary"]
            for c in cells}


def claim(cells: list[dict], task: str) -> str:
    """The paper's ordering evo > evo-no-sign > lorahub > uniform, checked on mean accuracy
    over the seeds where all four ran (a mean over other seeds would compare different
    user examples)."""
    order = ["evo", "evo-no-sign", "lorahub", "uniform"]
    by = {k: v for k, v in _by_cell(cells).items() if k[0] == task}
    missing = [v for v in order if _cell_mean(by, task, v) is None]
    if missing:
        return f"- {task}: not measured yet (no finished run of {', '.join(missing)})."
    seeds = _seeds_with(by, task, order)
    if not seeds:
        return f"- {task}: not measured yet (no seed with all of {', '.join(order)})."
    means = {v: _cell_mean(by, task, v, seeds=seeds) for v in order}
    text = " > ".join(f"{v} {means[v]:.3f}" for v in sorted(order, key=lambda v: -means[v]))
    holds = all(means[a] > means[b] for a, b in zip(order, order[1:], strict=False))
    where = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return f"- {task} ({where}): measured order {text} — the paper's order " + (
        "**holds**." if holds else "**does not hold** here.")


ABLATIONS = ("evo-no-sign", "evo-no-denoise", "evo-no-scale")


def ablation_claim(cells: list[dict], task: str) -> str | None:
    """The paper's ablation reading (each part of Evo-Merging helps): Evo minus each
    ablation on the test items, pooled over the seeds where Evo and all three ran, and
    whether the interval lies above zero. None until some seed has all four."""
    from blackbox.stats import format_diff, verdict

    by = _by_cell(cells)
    seeds = _seeds_with(by, task, ("evo", *ABLATIONS))
    if not seeds:
        return None
    parts, by_verdict = [], {"beats": [], "is not distinguishable from": [], "loses to": []}
    for v in ABLATIONS:
        d = _evo_minus(by, task, v, seeds)
        parts.append(f"Evo − {LABELS[v]} {format_diff(d)}")
        by_verdict[verdict(d)].append(v)
    where = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    part = {"evo-no-sign": "negative scales", "evo-no-denoise": "denoising (stage 1)",
            "evo-no-scale": "scaling (stage 2)"}
    helps = by_verdict["beats"]
    # "not shown" (the interval holds zero) and "hurt" (Evo did better without the part) are
    # different findings: a reader must not take one for the other
    held = ("**holds** for every part" if len(helps) == len(ABLATIONS) else
            ("holds for " + ", ".join(part[h] for h in helps) if helps
             else "**does not hold** for any part") + "; "
            + "; ".join(f"{what} {', '.join(part[v] for v in vs)}" for what, vs in
                        (("no difference shown for", by_verdict["is not distinguishable from"]),
                         ("Evo did better without", by_verdict["loses to"])) if vs))
    return (f"- {task} ablations ({where}, pooled, points [95% CI]): " + "; ".join(parts)
            + f" — the paper's reading that each part helps {held}.")


def _seeds_with(by: dict, task: str, variants: Iterable[str], part: str = "test") -> list[int]:
    """The seeds of ``task`` on which every one of ``variants`` has ``summary[part]``: means
    compared across variants are taken over these (the same user examples), never over
    whichever seeds each happened to finish."""
    variants = list(variants)
    seeds = {sd for t, sd, _ in by if t == task}
    return sorted(sd for sd in seeds
                  if all(by.get((task, sd, v), {}).get(part) for v in variants))


def _cell_mean(by: dict, task: str, variant: str, part: str = "test",
               stat: str = "accuracy", seeds: list[int] | None = None) -> float | None:
    """Mean over ``seeds`` (default: every seed it ran) of ``summary[part][stat]`` for one
    (task, variant); None: no run."""
    xs = [s[part][stat] for (t, sd, v), s in by.items()
          if t == task and v == variant and s.get(part) and (seeds is None or sd in seeds)]
    return sum(xs) / len(xs) if xs else None


def _mean_pairs(by: dict, tasks: list[str], v1: str,
                v2: str) -> list[tuple[str, float, float]]:
    """(task, mean test accuracy of v1, of v2) over the seeds where both ran."""
    out = []
    for t in tasks:
        if seeds := _seeds_with(by, t, (v1, v2)):
            a, b = (_cell_mean(by, t, v, seeds=seeds) for v in (v1, v2))
            assert a is not None and b is not None
            out.append((t, a, b))
    return out


def observations(cells: list[dict]) -> list[str]:
    """Facts read off the runs that explain the table (how far the searches moved); every
    sentence's conclusion is chosen by the numbers it states, not written in advance."""
    by = _by_cell(cells)
    tasks = sorted({t for t, _, _ in by})
    evo = [(k, s) for k, s in by.items() if k[2] == "evo" and isinstance(s.get("adapter"), dict)]
    out = []
    if evo:
        same = sum(1 for (t, sd, _), s in evo
                   if by.get((t, sd, "evo-no-sign"), {}).get("adapter") == s["adapter"])
        neg = sum(1 for _, s in evo if min(s["adapter"]["beta"]) < 0)
        moved = [abs(a - 1.0) for _, s in evo for a in s["adapter"]["alpha"]]
        beta = [b for _, s in evo for b in s["adapter"]["beta"]]
        n = len(evo[0][1]["adapter"]["adapters"])
        out.append(
            f"- Evo-Merging's best mixtures: α moved from 1 by {min(moved):.3f}-"
            f"{max(moved):.3f} (mean {sum(moved) / len(moved):.3f}); β ranges "
            f"{min(beta):+.3f}..{max(beta):+.3f} around the start 1/N = {1 / n:.3f}. "
            f"{neg} of {len(evo)} evo runs ended with a negative β.")
        sign = [f"{t} {a:.3f} / {b:.3f}" for t, a, b in _mean_pairs(by, tasks, "evo",
                                                                      "evo-no-sign")]
        compared = sum(1 for (t, sd, _), _s in evo if (t, sd, "evo-no-sign") in by)
        if compared:
            out.append(f"- Evo w/o sign (β ≥ 0) found the same mixture as Evo in {same} of "
                       f"{compared} cells" + (
                           "; the sign bound rarely binds at this budget."
                           if neg <= len(evo) // 3 else
                           "; mean test accuracy with negative scales allowed / with β ≥ 0: "
                           + "; ".join(sign) + "."))
    pairs = [(s, by[(t, sd, "evo-no-denoise")]) for (t, sd, _), s in evo
             if isinstance(by.get((t, sd, "evo-no-denoise"), {}).get("adapter"), dict)]
    if pairs:
        same_beta = sum(1 for a, b in pairs if a["adapter"]["beta"] == b["adapter"]["beta"])
        gap = max(abs(a["test"]["loss"] - b["test"]["loss"]) for a, b in pairs
                  if a.get("test") and b.get("test"))
        den = [f"{t} {a:.3f} with stage 1 vs {b:.3f} without"
               for t, a, b in _mean_pairs(by, tasks, "evo", "evo-no-denoise")]
        out.append(f"- Evo w/o denoising (α = 1) picked the same β as Evo in {same_beta} of "
                   f"{len(pairs)} cells (the variants share the stage-2 optimizer seed: common "
                   f"random numbers); stage 1's α changed the test loss by up to {gap:.1e}"
                   + (" — denoising barely acts at this budget." if gap < 1e-3 else
                      f" ({'; '.join(den)})."))
    for t in tasks:
        # the variants that ran on every seed of the task, compared over those seeds
        seeds = sorted({sd for tt, sd, _ in by if tt == t})
        variants = {v for tt, _, v in by if tt == t and v not in DETERMINISTIC
                    and _seeds_with(by, t, [v], "user") == seeds}
        user = {v: x for v in variants if (x := _cell_mean(by, t, v, "user", "loss")) is not None}
        test = {v: a for v in variants if (a := _cell_mean(by, t, v)) is not None}
        n_user = next((s["user"]["n"] for (tt, _, _), s in by.items()
                       if tt == t and s.get("user")), "the")
        if user and test:
            fit, best = min(user, key=user.get), max(test, key=test.get)
            # only a clear gap counts: user losses within 5% are the same fit
            if fit != best and user[best] > 1.05 * user[fit]:
                out.append(
                    f"- {t}: the lowest loss on the user's examples is {fit}'s ({user[fit]:.3f}, "
                    f"test acc {test[fit]:.3f}); the best test accuracy is {best}'s "
                    f"({test[best]:.3f}, user loss {user[best]:.3f}): with {n_user} user "
                    "examples the longer searches fit them more closely than they "
                    "generalize.")
    out += _fit_or_search(by, tasks)
    ties = [k for k in by if k[2] == "ties"]
    if ties:
        out.append("- TIES reads no user data and has no randomness: its number is the same "
                   "for every seed (run once per task).")
    return out


def _fit_vs_test(by: dict, task: str) -> dict | None:
    """Evo against LoraHub seed by seed on ``task``: in how many seeds Evo fit the user's
    examples better (lower user loss), in how many their test accuracies differ (the paired
    95% interval excludes 0), and in how many of those the better fit also tested better.
    ``None`` where no seed has both."""
    from blackbox.stats import paired_bootstrap

    seeds = _seeds_with(by, task, ("evo", "lorahub"), "user")
    if not seeds:
        return None
    fit, differ, agree = 0, 0, 0
    for sd in seeds:
        e, lh = by[(task, sd, "evo")], by[(task, sd, "lorahub")]
        evo_fit = e["user"]["loss"] < lh["user"]["loss"]
        fit += evo_fit
        d = paired_bootstrap(lh["test"]["correct"], e["test"]["correct"])
        if d["lo"] > 0 or d["hi"] < 0:
            differ += 1
            agree += evo_fit == (d["diff"] > 0)
    return {"seeds": seeds, "fit": fit, "differ": differ, "agree": agree}


def _fit_or_search(by: dict, tasks: list[str]) -> list[str]:
    """Evo against LoraHub seed by seed (:func:`_fit_vs_test`). If the one that tested better
    always fit the user's examples better, a loss on test is a search that found a worse
    optimum within its budget, not an overfit; the sentence follows the count."""
    out = []
    for t in tasks:
        if (v := _fit_vs_test(by, t)) is None:
            continue
        seeds, fit, differ, agree = v["seeds"], v["fit"], v["differ"], v["agree"]
        per = "; ".join(f"s{sd} {by[(t, sd, 'evo')]['user']['loss']:.3f} / "
                        f"{by[(t, sd, 'lorahub')]['user']['loss']:.3f}" for sd in seeds)
        text = (f"- {t}: user-example loss Evo / LoraHub: {per}. Evo fit the user's examples "
                f"better in {fit} of {len(seeds)} seeds; their test accuracies differ (paired "
                f"interval excludes 0) in {differ}")
        if differ and agree == differ:
            text += (f", and in all {differ} the one with the lower user loss tested better: "
                     "where Evo loses to LoraHub it also fit worse, so the gap is in the "
                     "search (a worse optimum within its evaluations), not in overfitting.")
        elif differ:
            text += (f"; in {differ - agree} of those the better fit tested worse, so part of "
                     "the fit does not carry over to the test set.")
        else:
            text += ": a closer fit did not change test accuracy."
        out.append(text)
    return out


def _setting(cells: list[dict]) -> dict | None:
    """The paper conditions a grid's Evo cells ran under: adapters merged, evaluations (both
    stages), user examples. None: no finished Evo cell."""
    evo = [c for c in cells if c["recipe"]["variant"] == "evo"
           and isinstance(c["summary"].get("adapter"), dict)]
    if not evo:
        return None
    r, s = evo[0]["recipe"], evo[0]["summary"]
    return {"adapters": len(s["adapter"]["adapters"]),
            "evaluations": r["stage1"]["evaluations"] + r["stage2"]["evaluations"],
            "user examples": s["user"]["n"]}


def _changed(main: dict, other: dict) -> str:
    """What a varied grid changed, e.g. ``6 adapters (12 in the grid)``."""
    return ", ".join(f"{other[k]:,} {k} ({main[k]:,} in the grid)" for k in main
                     if other[k] != main[k]) or "nothing"


def _evo_minus(by: dict, task: str, variant: str, seeds: list[int]) -> dict:
    """Evo minus ``variant`` on ``task``'s test items, pooled over ``seeds`` (every seed
    scores the same test items, so one draw of items serves all)."""
    from blackbox.stats import pooled_bootstrap

    return pooled_bootstrap([(by[(task, sd, variant)]["test"]["correct"],
                              by[(task, sd, "evo")]["test"]["correct"]) for sd in seeds],
                            same_items=True)


def _is_rerun(main: dict | None, other_cells: list[dict]) -> bool:
    """Whether a grid beside the main one changed none of its conditions (a rerun of its
    cells, :func:`reproduced`); False where either has no Evo cell to tell by."""
    other = _setting(other_cells)
    return main is not None and other is not None and _changed(main, other) == "nothing"


def varied(cells: list[dict], others: dict[str, list[dict]]) -> list[str]:
    """The paper's conditions varied one at a time (a grid of Evo and LoraHub with one flag
    changed, in a runs folder of its own): Evo minus LoraHub on the seeds both grids ran,
    beside the same difference in the main grid. The sentence follows the intervals."""
    from blackbox.stats import format_diff, verdict

    main, rows, text = _setting(cells), [], []
    if main is None:
        return []
    by = _by_cell(cells)
    for other_cells in others.values():
        other = _setting(other_cells)
        if other is None or _is_rerun(main, other_cells):  # reruns: :func:`reproduced`
            continue
        ob = _by_cell(other_cells)
        what = _changed(main, other)
        for t in sorted({t for t, _, _ in ob}):
            seeds = sorted(set(_seeds_with(ob, t, ("evo", "lorahub")))
                           & set(_seeds_with(by, t, ("evo", "lorahub"))))
            if not seeds:
                continue
            d0, d1 = (_evo_minus(b, t, "lorahub", seeds) for b in (by, ob))
            fit = sum(ob[(t, sd, "evo")]["user"]["loss"] < ob[(t, sd, "lorahub")]["user"]["loss"]
                      for sd in seeds if ob[(t, sd, "evo")].get("user")
                      and ob[(t, sd, "lorahub")].get("user"))
            fits = f"{fit} of {len(seeds)}"
            rows.append(f"| {what} | {t} | {', '.join(map(str, seeds))} | {format_diff(d0)} | "
                        f"{format_diff(d1)} | {fits} |")
            move = 100 * (d1["diff"] - d0["diff"])
            # a change LoraHub does not read (Evo's evaluations) leaves its cells as they were:
            # then the gap's move is Evo's own, and the sentence says so
            same_hub = all(ob[(t, sd, "lorahub")]["test"]["correct"]
                           == by[(t, sd, "lorahub")]["test"]["correct"] for sd in seeds)
            text.append(f"- {t}, {what}: Evo {verdict(d1)} LoraHub ({format_diff(d1)}; in the "
                        f"grid, over the same seeds, Evo {verdict(d0)} it, {format_diff(d0)}): "
                        f"the gap moved {move:+.1f} points" + (
                            " toward Evo" if move > 0 else " toward LoraHub" if move < 0
                            else "") + (
                            "; LoraHub's cells scored the same test items right as in the grid "
                            "(the change does not reach it), so the move is Evo's own."
                            if same_hub else "."))
    if not rows:
        return []
    return (["## The paper's conditions varied (Evo − LoraHub)", "",
             "Each row is a grid of Evo and LoraHub with one setting changed (its runs folder "
             "beside the main one), against the main grid on the seeds both ran: accuracy "
             "points, pooled over those seeds, with a 95% bootstrap interval over test items.",
             "", "| changed | task | seeds | Evo − LoraHub, grid | Evo − LoraHub, changed | "
             "Evo fit the user examples better (changed) |", "|---|---|---|---:|---:|---:|"]
            + rows + [""] + text + [""])


def reproduced(cells: list[dict], others: dict[str, list[dict]]) -> tuple[list[str], bool]:
    """Cells of the grid rerun, with nothing changed, in a folder beside it (on a rebuilt zoo
    whose description matches): whether each rerun scored the same test items right and
    chose the same mixture, and by how much its losses moved. This is what says whether a
    missing cell may run on the rebuild and sit in the grid's table: the bool is True where
    some rerun exists and every one scored the same test items right and wrong (float32 on
    another CPU may round a loss differently in the 7th digit, and a search then ends on a
    mixture that differs in the 5th; the sentence gives both sizes)."""
    main, by, out, reproduces = _setting(cells), _by_cell(cells), [], []
    for name, other_cells in others.items():
        if not _is_rerun(main, other_cells):
            continue
        pairs = [(k, by[k], s) for k, s in sorted(_by_cell(other_cells).items())
                 if k in by and by[k].get("test") and s.get("test")]
        if not pairs:
            continue
        same = sum(a["test"]["correct"] == b["test"]["correct"] for _, a, b in pairs)
        mix = sum(a.get("adapter") == b.get("adapter") for _, a, b in pairs)
        dtest = max(abs(a["test"]["loss"] - b["test"]["loss"]) for _, a, b in pairs)
        duser = max((abs(a["user"]["loss"] - b["user"]["loss"]) for _, a, b in pairs
                     if a.get("user") and b.get("user")), default=0.0)
        cand = [(a["candidates"], b["candidates"]) for _, a, b in pairs
                if a.get("candidates") and b.get("candidates")]
        which = ", ".join(f"{t} s{sd} {v}" for (t, sd, v), _, _ in pairs)
        coef = max((abs(x - y) for _, a, b in pairs
                    if isinstance(a.get("adapter"), dict) and isinstance(b.get("adapter"), dict)
                    for k in ("alpha", "beta")
                    for x, y in zip(a["adapter"][k], b["adapter"][k], strict=True)),
                   default=0.0)
        # the test items scored right are what the table reads: the criterion for resuming
        reproduces.append(same == len(pairs))
        out += [f"Rerun of {len(pairs)} cells of the grid with nothing changed ({name}: "
                f"{which}): the same test items right and wrong in {same} of {len(pairs)}, the "
                f"same mixture in {mix} of {len(pairs)} (α and β moved by at most {coef:.1e}); the "
                f"test loss moved by at most "
                f"{dtest:.1e} and the user-example loss by at most {duser:.1e}"
                + (("; best-single's per-adapter user losses moved by at most "
                    f"{gap:.1e}" if (gap := _max_candidate_gap(cand)) else
                    "; best-single's per-adapter user losses did not move") if cand else "")
                + ".", ""]
    return out, bool(reproduces) and all(reproduces)


def _max_candidate_gap(pairs: list[tuple[dict, dict]]) -> float:
    """The largest change in any adapter's user-example cross-entropy between two
    best-single runs (their ``candidates``: adapter name -> {accuracy, ce})."""
    return max((abs(a[k]["ce"] - b[k]["ce"]) for a, b in pairs for k in a if k in b),
               default=0.0)


def conditions(cells: list[dict], others: dict[str, list[dict]] | None = None) -> list[str]:
    """Which of the paper's conditions this setting does not meet, and, per task, which one
    the runs point at: the same Evo-vs-LoraHub counts as the observations decide it (a worse
    test score with a worse fit points at the search budget; a better fit with no better test
    score points at the number of user examples). Conditions a grid in ``others`` varied are
    said to be measured (:func:`varied`); the rest, and the model size, not varied."""
    by = _by_cell(cells)
    main = _setting(cells)
    if main is None:
        return []
    n_user, n_adapters = main["user examples"], main["adapters"]
    lines = [f"Conditions of the paper this setting does not meet (configuration table): a "
             f"135M-parameter model, {n_adapters} adapters, {n_user} user examples instead of "
             f"300, {main['evaluations']:,} evaluations instead of 1,200. Which one the runs "
             "point at, from Evo against LoraHub seed by seed (observations below):", ""]
    for t in sorted({t for t, _, _ in by}):
        if (v := _fit_vs_test(by, t)) is None:
            continue
        n = len(v["seeds"])
        if v["differ"] and v["agree"] == v["differ"]:
            lines.append(f"- {t}: the search budget. Where Evo and LoraHub differ on test "
                         f"({v['differ']} of {n} seeds) the better one also fit the user's "
                         "examples better, so Evo's losses are worse optima within its "
                         "evaluations.")
        elif v["fit"] and v["differ"] < v["fit"]:
            lines.append(f"- {t}: the number of user examples. Evo fit them better in "
                         f"{v['fit']} of {n} seeds, and the test accuracies differ in "
                         f"{v['differ']}: a closer fit of {n_user} examples does not carry "
                         "over to the test set.")
        else:
            lines.append(f"- {t}: neither reading is clear from these seeds.")
    measured = {k for o in (others or {}).values() if (s := _setting(o))
                for k in main if s[k] != main[k]}
    names = {"adapters": "adapter count", "evaluations": "search budget",
             "user examples": "number of user examples"}
    if measured:
        lines += ["", "Varied one at a time, measured (next section): "
                  + ", ".join(names[k] for k in main if k in measured) + "."]
    rest = [names[k] for k in main if k not in measured] + ["model size"]
    not_varied = ", ".join(rest[:-1]) + " and " + rest[-1] if len(rest) > 1 else rest[0]
    lines += ["", f"{not_varied[0].upper()}{not_varied[1:]} "
              f"{'were' if len(rest) > 1 else 'was'} not varied.", ""]
    return lines


def load_varied(runs: Path, zoo: dict) -> dict[str, list[dict]]:
    """The grids beside ``runs`` that vary one condition (folders named ``<runs>-<what>``),
    each under its folder name; one measured on another build of the zoo than ``zoo`` is
    left out, and said to be on stdout (its Evo and LoraHub are not comparable). A zoo built
    only as far as the adapters a grid merges counts as the same build if those adapters
    are (same specs, same final losses)."""
    out = {}
    for folder in sorted(runs.parent.glob(f"{runs.name}-*")):
        kept = folder / "zoo.json"
        if not kept.is_file() or not same_adapters(json.loads(kept.read_text()), zoo):
            print(f"left out {folder}: not measured on the zoo of {runs}")
            continue
        cells, _ = load(folder)
        if cells:
            out[folder.name] = cells
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=REPO / "results" / "merge-runs")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "evo-merge.md")
    ap.add_argument("--zoo", type=Path, default=None, help="zoo folder whose zoo.json to "
                    "describe (default: the copy the grid keeps in --runs)")
    args = ap.parse_args()
    cells, stale = load(args.runs)
    # the grid keeps the description of the zoo its cells ran on next to them
    zoo_file = args.runs / "zoo.json" if args.zoo is None else args.zoo / "zoo.json"
    zoo = json.loads(zoo_file.read_text()) if zoo_file.is_file() else {}
    lines = ["# Evo-Merging (bbx merge): results", "",
             "Every number is read from a run directory of `scripts/merge_grid.py` (one run "
             "per task × seed × variant, local backend = the same code path `bbx serve` "
             "answers through). Regenerate with `.venv/bin/python scripts/merge_report.py`.",
             ""]
    if stale or not cells:
        lines += ["**The earlier results are withdrawn.** They were measured on a zoo whose "
                  "sst-5 and mr adapters trained on SST-2's test sentences (all 1,821 are in "
                  "SST-5's test file, 693 in MR's after normalization), with user examples "
                  "drawn from the test split. bbx now refuses such runs (the leak guard) and "
                  "the zoo drops every merge target's test text and user example before "
                  "training."
                  + (f" {stale} finished run(s) from before the guard are left out." if stale
                     else "") + (" The grid has not been rerun yet." if not cells else ""),
                  ""]
    if cells:
        r = cells[0]["recipe"]
        lines += [
            "## Configuration: scaled down from the paper, honestly", "",
            "| | paper (official code) | here |", "|---|---|---|",
            f"| stage 1 (α) evaluations | 400, pop 20, σ0 0.05 | "
            f"{r['stage1']['evaluations']}, pop {r['stage1']['popsize']}, σ0 "
            f"{r['stage1']['sigma0']} |",
            f"| stage 2 (β) evaluations | 800, pop 20, σ0 0.05 | "
            f"{r['stage2']['evaluations']}, pop {r['stage2']['popsize']}, σ0 "
            f"{r['stage2']['sigma0']} |",
            f"| LoraHub steps | 40 | {r['lorahub']['evaluations']} |",
            f"| L1 weight | 0.05 | {r['l1']} |",
            f"| user examples | 300 validation examples | {r['user_examples']}, stratified "
            "(spread evenly over the classes), from the target's train and dev files |",
            "| scored test examples | full test sets | "
            + ("the full test split" if r['test_limit'] is None else
               f"{r['test_limit']} (the shared seeded subset)") + " |",
            "| base model | Llama-2 / larger | SmolLM2-135M-Instruct, CPU, "
            f"{r['backend'].get('dtype', 'auto')} |",
            "| adapter repository | many public LoRAs | the zoo built by "
            "`bbx zoo build` (below) |", "",
            "Why: one evaluation (one mixture on the user's examples) costs a forward pass "
            "over ~32 tokens per example; a 2-core CPU scores a few hundred prompt tokens "
            "per second in fp32 (results/bench-engine.md), so the paper's 1200 × 300 "
            "evaluations would take days per run. fp32 rather than bf16: the loss "
            "differences CMA-ES ranks between nearby mixtures are small, and bf16 would "
            "round part of them away.", ""]
        if zoo:
            lines += ["## The adapter zoo", "",
                      f"Held out of the zoo (merge targets): {', '.join(zoo['held_out'])}. "
                      "LoRA r=8, lora_alpha=16 on q,k,v,o,gate,up,down, trained on the label "
                      "word after the template.", "",
                      "| adapter | source | template | label words | texts | dropped as "
                      "target texts | steps | final train loss | train s |",
                      "|---|---|---:|---|---:|---|---:|---:|---:|"]
            for name, a in zoo["adapters"].items():
                sp = a["spec"]
                src = sp["task"] + (f" 16-shot files, seeds {sp['seeds']}" if sp.get("seeds")
                                    else "")
                dropped = ", ".join(f"{k} {v}" for k, v in
                                    a.get("dropped_as_target_texts", {}).items() if v) or "none"
                lines.append(f"| {name} | {src} | {sp['template']} | "
                             f"{sp['label_words'] or 'task default'} | {a['examples']} | "
                             f"{dropped} | {a['train']['steps']} | {a['final_loss']:.3f} | "
                             f"{a['seconds']:.0f} |")
            lines.append("")
            if zoo.get("recovered_from"):
                lines += [f"This description of the zoo was {zoo['recovered_from']}.", ""]
    lines += ["## Results (test accuracy)", ""]
    for task in TASKS:
        lines += table(cells, task)
        lines += paired(cells, task)
    done = {(c["recipe"]["task"], c["recipe"]["seed"], c["recipe"]["variant"]) for c in cells}
    # a deterministic variant (TIES) runs once per task, at the first seed
    grid = [(t, s, v) for s in SEEDS for t in TASKS for v in VARIANTS
            if v not in DETERMINISTIC or s == SEEDS[0]]
    missing = [f"{t} s{s} {v}" for t, s, v in grid if (t, s, v) not in done]
    lines += ["## Coverage", "",
              f"{len(grid) - len(missing)} of {len(grid)} cells of the grid "
              f"({', '.join(TASKS)} × seeds {', '.join(map(str, SEEDS))} × "
              f"{len(VARIANTS)} variants; {', '.join(sorted(DETERMINISTIC))} once per task) "
              "have finished."
              + (" Not run (yet): " + "; ".join(missing) + "." if missing else ""), ""]
    others = load_varied(args.runs, zoo)
    rerun, resumable = reproduced(cells, others)
    if zoo.get("recovered_from") and resumable:
        lines += ["The zoo the first cells ran on is gone with the machine that built it "
                  "(above). It was rebuilt from the same specs and seeds on another machine "
                  "(every adapter's final training loss equals the lost build's to the three "
                  "decimals recorded), and cells not finished on the lost build run on the "
                  "rebuild, because reruns of finished cells on it scored the same test items "
                  "right and wrong:", ""]
    elif missing and zoo.get("recovered_from"):
        lines += ["The missing cells cannot resume: the zoo the finished ones ran on is gone "
                  "with the machine that built it (above), and a rebuild on another CPU need "
                  "not reproduce its weights (fp32 sums in another order). Running them means "
                  "rebuilding the zoo and rerunning the whole grid on it in a new runs folder "
                  "(`scripts/merge_grid.py` refuses to mix zoo builds): the zoo took "
                  f"{sum(a['seconds'] for a in zoo['adapters'].values()) / 3600:.1f} h to "
                  "train and the finished cells "
                  f"{sum(c['summary'].get('run_wall_s', 0) for c in cells) / 3600:.1f} h to "
                  "run on the machine that ran them.", ""]
    lines += rerun
    dtypes = ', '.join(sorted({c['recipe']['backend'].get('dtype', 'auto') for c in cells}))
    lines += machines_lines([(c["dir"], f"{c['recipe']['task']} s{c['recipe']['seed']}")
                             for c in cells],
                            f"Machines (from the run manifests; every cell ran in {dtypes})")
    lines += ["## The paper's claim: Evo > w/o sign > LoraHub > uniform", ""]
    lines += [claim(cells, t) for t in TASKS]
    lines += [a for t in TASKS if (a := ablation_claim(cells, t))] + [""]
    lines += conditions(cells, others)
    lines += varied(cells, others)
    obs = observations(cells)
    if obs:
        lines += ["## Observations (computed from the runs)", ""] + obs + [""]
    lines += ["## Reproduce one cell", ""]
    for c in [c for c in cells if c["recipe"]["variant"] == "evo"][:1] or cells[:1]:
        lines.append("e.g. " + _command(c["recipe"]))
    for name, other in others.items():
        evo = next((c for c in other if c["recipe"]["variant"] == "evo"), other[0])
        what = ("a rerun of grid cells" if _is_rerun(_setting(cells), other)
                else "a condition varied")
        lines.append(f"- {what} ({name}), e.g. "
                     + _command(evo["recipe"], f"{args.runs.parent.name}/{name}"))
    lines += ["", "The whole grid: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python "
              "scripts/merge_grid.py --lock /tmp/bbx-heavy.lock` (resumable; finished cells are "
              "skipped), then `.venv/bin/python scripts/merge_report.py`.", "",
              "Queries: label-word scorings (one example under one mixture = 1), user data "
              "and test subset together. *sent* counts every one the method asked for; *paid* "
              "only those not already in the shared response cache (cells of the grid share "
              "it: e.g. w/o sign repeats evo's stage 1 for free). Wall time includes model "
              "loading and the test scoring.", ""]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} ({len(cells)} runs)")


if __name__ == "__main__":
    main()
