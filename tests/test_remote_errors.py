"""Bad input to the remote backend, through the CLI as a user meets it: an unreachable URL,
a wrong key, a model the server does not serve, a model neither route takes,
``top_logprobs`` above the server's cap. Each is one line on stderr that names the problem
and the fix, and exit code 2; a run that already paid for answers stays on disk and
resumes without paying for them again.

Servers: ``tests/fake_openai.py`` behind ``tests/loopback.py`` on 127.0.0.1; the CLI runs
in-process through its console entry point (``blackbox.cli.main.main``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")

from fake_openai import FakeOpenAI, SeededLogits  # noqa: E402
from loopback import LoopbackServer  # noqa: E402
from serve_support import free_port  # noqa: E402

KEY_ENV = "BBX_TEST_REMOTE_KEY"


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        *args: str) -> tuple[int, str, str]:
    """Run ``bbx ARGS`` through the console entry point: (exit code, stdout, stderr)."""
    from blackbox.cli.main import main

    monkeypatch.setattr(sys, "argv", ["bbx", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def eval_args(base: str, tmp: Path, *extra: str) -> list[str]:
    return ["eval", "--task", "sst-2", "--limit", "4", "--backend", "remote", "--base-url",
            base, "--api-key-env", KEY_ENV, "--no-progress", "--json", "--output-dir",
            str(tmp / "runs"), *extra]


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BBX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(KEY_ENV, "k-right")


def test_an_unreachable_url(tmp_path: Path, capsys, monkeypatch) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "method": "eval", "task": "sst-2", "limit": 4, "output_dir": str(tmp_path / "runs"),
        "backend": {"kind": "remote", "base_url": url, "api_key_env": KEY_ENV,
                    "max_retries": 1}}))
    code, _, err = cli(capsys, monkeypatch, "run", str(recipe), "--no-progress")
    one_line_error(code, err, f"cannot reach {url}", "start the server", "--base-url")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_wrong_key(tmp_path: Path, capsys, monkeypatch) -> None:
    with LoopbackServer(FakeOpenAI(SeededLogits(), api_key="k-other").app()) as base:
        code, _, err = cli(capsys, monkeypatch, *eval_args(base, tmp_path))
    one_line_error(code, err, f"{base} refused the API key (401)", f"set ${KEY_ENV}")


def test_a_model_the_server_does_not_serve(tmp_path: Path, capsys, monkeypatch) -> None:
    fake = FakeOpenAI(SeededLogits())
    with LoopbackServer(fake.app()) as base:
        code, _, err = cli(capsys, monkeypatch, *eval_args(base, tmp_path, "--model", "nope"))
    one_line_error(code, err, "does not serve model 'nope' (it lists: fake-chat)",
                   "give --model")
    assert [r for r, _ in fake.requests] == ["completions"]  # not taken for a chat model


def test_a_model_that_refuses_chat_and_completions(tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    with LoopbackServer(FakeOpenAI(SeededLogits(), refuse_chat=True).app()) as base:
        code, _, err = cli(capsys, monkeypatch, *eval_args(base, tmp_path))
    one_line_error(code, err, "model 'fake-chat' refuses both /v1/completions and "
                   "/v1/chat/completions", "use a text-generation model")


def test_top_logprobs_above_the_servers_cap(tmp_path: Path, capsys, monkeypatch) -> None:
    with LoopbackServer(FakeOpenAI(SeededLogits(), max_logprobs=5).app()) as base:
        code, _, err = cli(capsys, monkeypatch, *eval_args(base, tmp_path))
    one_line_error(code, err, "refuses top_logprobs=20", "backend.top_logprobs to 5",
                   "--set backend.top_logprobs=5")


def test_a_run_that_paid_stays_on_disk_and_resumes(tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    """The key is revoked after the first chunk of 256 items (eval scores in chunks):
    the run fails with one line, keeps its 256 paid rows, and resumes paying the rest."""
    fake = FakeOpenAI(SeededLogits(), api_key="k-right")
    app = fake.app()
    seen = {"completions": 0}

    async def revoking(scope, receive, send):  # the key stops working mid-run
        if scope["type"] == "http" and scope["path"] == "/v1/completions":
            seen["completions"] += 1
            if seen["completions"] > 1 + 256:  # the route probe, then one chunk
                fake.api_key = "k-revoked"
        await app(scope, receive, send)

    recipe = tmp_path / "r.yaml"
    with LoopbackServer(revoking) as base:
        recipe.write_text(json.dumps({
            "method": "eval", "task": "sst-2", "limit": 300,
            "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
            "backend": {"kind": "remote", "base_url": base, "api_key_env": KEY_ENV,
                        "label_logprobs": "topk"}}))
        code, _, err = cli(capsys, monkeypatch, "run", str(recipe), "--no-progress")
        one_line_error(code, err, "refused the API key (401)", f"set ${KEY_ENV}")
        [run_dir] = list((tmp_path / "runs").iterdir())
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["paid_rows"] == 256
        assert "refused the API key" in summary["error"]
        monkeypatch.setenv(KEY_ENV, "k-revoked")  # the user sets the new key and resumes
        code, out, err = cli(capsys, monkeypatch, "run", str(recipe), "--run-dir",
                             str(run_dir), "--no-progress", "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["n"] == 300 and done["usage"]["queries"] == 300 - 256
    assert done["usage"]["cached"] == 256
