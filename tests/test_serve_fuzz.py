"""Fuzzing ``bbx serve`` from its own OpenAPI schema: thousands of malformed requests (wrong
types, NaN and huge numbers, lone surrogates, unknown and missing fields, broken JSON, odd
content types and methods) must never get a 5xx, and ``/health`` must answer afterwards."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from serve_support import build_tiny_model, build_zoo, running_server  # noqa: E402

EXAMPLES = 2500
STATUSES: dict[int, int] = {}  # status -> count, over the whole fuzz run


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    root = tmp_path_factory.mktemp("fuzz")
    model = build_tiny_model(root / "model", context=48)
    zoo = build_zoo(model, root / "zoo")
    backend = LocalBackend(model=str(model), dtype="float32", embed_model="mean",
                           adapters=str(zoo), batch_size=8)
    app = create_app(backend, api_key=None, max_wait_ms=1, max_body_bytes=256 * 1024)
    with running_server(app) as url:
        import httpx2

        root_url = url.removesuffix("/v1")
        schema = httpx2.get(root_url + "/openapi.json").json()
        with httpx2.Client(base_url=root_url, timeout=60) as client:
            yield client, _routes(schema)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def _routes(schema: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(method, path, body property names) for every operation in the schema."""
    out = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            props: list[str] = []
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                node = _resolve(schema, body["schema"])
                props = sorted(node.get("properties", {}))
            out.append((method.upper(), path, props))
    return out


SPECIAL_FLOATS = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0,
                                  5e-324, 1.5, -1.5, 0.5, 2.0])
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(
    ["", " ", "\ud800", "\x00", "sst2", "trec", "news", "default", "🙂" * 5, "a" * 300,
     " good", "last", "mask", "base64", "float", "user", "system", "wizard", "0", "-1"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.integers(-3, 100), SPECIAL_FLOATS, st.floats(allow_nan=True), TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(TEXT, inner, max_size=5)), max_leaves=12)
MIXTURES = st.fixed_dictionaries({"adapters": st.lists(TEXT, max_size=3)}, optional={
    "alpha": st.lists(SCALARS, max_size=3), "beta": st.lists(SCALARS, max_size=3),
    "gamma": VALUES})


def _body(data: st.DataObject, props: list[str]) -> bytes:
    kind = data.draw(st.sampled_from(["fields", "fields", "fields", "raw", "value"]))
    if kind == "raw":  # broken JSON and non-JSON bytes
        return data.draw(st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"{", b'{"prompt": "x",}', b"[" * 5000 + b"]" * 5000,
                             b'{"a": ' * 3000, b"null", b"NaN", b"\xff\xfe", b""])))
    if kind == "value":  # valid JSON, but not an object of the right shape
        return json.dumps(data.draw(VALUES)).encode()
    fields: dict[str, Any] = {}
    for name in data.draw(st.lists(st.sampled_from(props or ["x"]), max_size=6,
                                   unique=True)):
        fields[name] = data.draw(MIXTURES if name == "adapter" and data.draw(st.booleans())
                                 else VALUES)
    if data.draw(st.booleans()):  # an unknown field now and then
        fields[data.draw(TEXT)] = data.draw(VALUES)
    return json.dumps(fields, allow_nan=True).encode()


def _path(data: st.DataObject, path: str) -> str:
    if "{" in path:
        return path.split("{")[0] + data.draw(st.sampled_from(["news", "ghost", "..", "%00",
                                                               "a" * 200]))
    return path


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_requests_never_get_a_5xx(served, data: st.DataObject) -> None:
    client, routes = served
    method, path, props = data.draw(st.sampled_from(routes))
    if data.draw(st.integers(0, 9)) == 0:  # the wrong method now and then
        method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    if path.startswith("/v1/adapters") and method in ("POST", "DELETE"):
        method = "GET"  # loading / unloading the zoo is tested elsewhere; keep it intact
    ctype = data.draw(st.sampled_from(["application/json"] * 4 + ["text/plain", ""]))
    headers = {"content-type": ctype} if ctype else {}
    body = _body(data, props) if method in ("POST", "PUT", "PATCH") else None
    r = client.request(method, _path(data, path), content=body, headers=headers)
    STATUSES[r.status_code] = STATUSES.get(r.status_code, 0) + 1
    assert r.status_code < 500, (method, path, body[:300] if body else None, r.text[:300])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        assert "error" in r.json() or "detail" not in r.json()


def test_server_still_answers_after_fuzzing(served) -> None:
    client, _ = served
    assert client.get("/health").json()["status"] == "ok"
    if STATUSES:  # the fuzz test ran in this session: it sent thousands, some valid
        assert sum(STATUSES.values()) >= 2000 and STATUSES.get(200, 0) > 0
        assert not [s for s in STATUSES if s >= 500]
        assert len([s for s in STATUSES if 400 <= s < 500]) >= 3, STATUSES
    r = client.post("/v1/label_logprobs", json={"prompts": ["the movie was"],
                                                "label_words": [" good"], "adapter": "sst2"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1


def test_schema_covers_the_routes(served) -> None:
    _, routes = served
    paths = {p for _, p, _ in routes}
    assert {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/label_logprobs",
            "/v1/score", "/v1/hidden_states", "/v1/adapters", "/tokenize"} <= paths
