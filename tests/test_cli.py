"""The CLI as a user meets it: fast help, one-line errors with exit code 2, run → report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import bbx


def test_help_imports_neither_torch_nor_nevergrad() -> None:
    code = ("import sys; from blackbox.cli.main import app; import typer.testing as t; "
            "r = t.CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'nevergrad', 'transformers', 'sklearn', 'ot') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0]


def test_unknown_task() -> None:
    _assert_one_line_error(bbx("eval", "--task", "sst2", "--backend", "fake"),
                           "unknown task 'sst2'", "did you mean 'sst-2'")


def test_misspelled_recipe_key(tmp_path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("method: eval\ntask: trec\nbackend: {kind: fake}\nlimt: 5\n")
    _assert_one_line_error(bbx("run", str(f)), "unknown key 'limt'", "did you mean 'limit'")


def test_missing_data_folder(tmp_path) -> None:
    proc = bbx("eval", "--task", "trec", "--backend", "fake", "--output-dir", str(tmp_path),
               env={"BBX_DATA_DIR": str(tmp_path / "missing")})
    _assert_one_line_error(proc, "BBX_DATA_DIR", "trec")


def test_model_path_that_does_not_exist(tmp_path) -> None:
    proc = bbx("eval", "--task", "trec", "--model", str(tmp_path / "no-such-model"),
               "--limit", "2", "--output-dir", str(tmp_path))
    _assert_one_line_error(proc, "no-such-model")


def test_unknown_backend_and_list() -> None:
    _assert_one_line_error(bbx("eval", "--backend", "fak"), "backend")
    _assert_one_line_error(bbx("ls", "optimisers"), "unknown list")


def test_eval_run_report_and_cache(tmp_path) -> None:
    args = ("eval", "--task", "trec", "--backend", "fake", "--limit", "20", "--json",
            "--no-progress", "--output-dir", str(tmp_path))
    first = json.loads(bbx(*args).stdout)
    assert first["n"] == 20 and 0.0 <= first["accuracy"] <= 1.0
    assert first["usage"]["queries"] == 20
    second = json.loads(bbx(*args).stdout)
    assert second["usage"]["queries"] == 0 and second["usage"]["cached"] == 20
    assert second["accuracy"] == first["accuracy"]
    rep = json.loads(bbx("report", second["run_dir"], "--json").stdout)
    assert rep["ledger"] == {"rows": 20, "paid": 0, "cached": 20, "tokens": 0,
                             "completion_tokens": 0, "usd": None}  # unpriced: no dollars


def test_report_of_a_folder_that_is_not_a_run(tmp_path) -> None:
    _assert_one_line_error(bbx("report", str(tmp_path)), "not a bbx run directory")


def test_ls_lists_everything() -> None:
    out = bbx("ls").stdout
    for needle in ("optimizers:", "cma", "backends:", "local", "tasks:", "bbc-news",
                   "recipes/quickstart.yaml"):
        assert needle in out


@pytest.mark.parametrize("args", [["--help"], ["eval", "--help"], ["run", "--help"]])
def test_help_pages(args: list[str]) -> None:
    assert bbx(*args).returncode == 0
