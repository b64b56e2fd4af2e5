"""Label words from next-token ``top_logprobs``, on either route.

**The top-k mode** (``capabilities.label_logprobs == "topk"``): one greedy one-token
request per prompt (``max_tokens=1, temperature=0``; on chat ``logprobs=true,
top_logprobs=k``, k at most 20 as OpenAI allows); label words are matched to the top-k
tokens as :mod:`blackbox.backends.labels` says (completions: the exact text, leading space
included; chat: stripped and case-folded, ``" positive"`` -> ``"positive"``, variants
summed). Each word still missing, when the server has a tokenize route (vLLM's, bbx's and
llama-server's ``/tokenize``, llama-cpp-python's ``/extras/tokenize``: :data:`TOKENIZE_ROUTES`)
and ``logit_bias`` is on, gets one more
call with a +``BIAS`` bias on its first token (on chat: of the stripped word), which makes
it the greedy token, and the log-prob the server reports for that token is read: servers
that report log-probs after the bias (as OpenAI does) give ``log p'``, and the unbiased
value is recovered exactly from the shift of the reference token (the unbiased top-1):
``log p = log p' - BIAS + (log p_ref - log p'_ref)``; servers that report raw log-probs
(llama.cpp) leave the reference unchanged and give ``log p`` itself. A server that refuses
the bias (bbx serve's chat route: 400) is remembered and noted in
``capabilities.extra["logit_bias"]``. A word still missing gets the **floor**: the smaller
of the lowest top-k log-prob and the log of the probability mass outside the top-k, an
upper bound on its true value. **Multi-token words score their first token**: on chat the
bias-recovered value is the log-prob of the first token of the stripped word (a top-k
token is credited only when it spells the whole word); on completions a word must be one
token (its exact text) or it gets the floor.

Split from ``remote.py`` to keep each module small; the functions take the backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blackbox.backends.labels import chat_word, floor, match_top
from blackbox.backends.shapes import NextToken
from blackbox.errors import BbxError

if TYPE_CHECKING:
    from blackbox.backends.remote import RemoteBackend

BIAS = 30  # logit shift that makes a label token the greedy one (an int: OpenAI's type)


def topk_row(b: RemoteBackend, prompt: str, words: list[str],
             extra: dict[str, Any] | None) -> list[float]:
    """One prompt's label-word scores from one greedy one-token request, plus one biased
    request per word missing from the top-k (where the server can bias and tokenize)."""
    chat = b.api_in_use == "chat"
    first = b.next_token(prompt, extra)
    found = match_top(first.top, words, chat)
    missing = [w for w in words if w not in found]
    if missing and first.top and b.use_logit_bias:
        for w in missing:
            value = _recover(b, prompt, w, extra, first, chat)
            if value is not None:
                found[w] = value
    low = floor(first.top)
    return [found.get(w, low) for w in words]


def _recover(b: RemoteBackend, prompt: str, word: str, extra: dict[str, Any] | None,
             first: NextToken, chat: bool) -> float | None:
    """``word``'s (first token's) log-prob through ``logit_bias``, or ``None`` when the
    server cannot say (no tokenize route, bias refused, or the biased pick is not it)."""
    if b.bias_note is not None:  # refused once: the server will refuse again
        return None
    target = word.strip() if chat else word  # chat replies start without the space
    tok = b.first_token(target)
    if tok is None:
        return None
    try:
        biased = b.next_token(prompt, extra, {str(tok): BIAS})
    except BbxError as e:
        status = getattr(e.__cause__, "status_code", None)
        if status in (400, 422):  # e.g. bbx serve's chat route: logit_bias unsupported
            b.bias_note = f"logit_bias refused by the server ({status}): {e}"
            return None
        raise
    pick = biased.token
    if pick is None or biased.logprob is None:
        return None
    ok = (bool(chat_word(pick)) and chat_word(word).startswith(chat_word(pick))) if chat \
        else pick == word
    ref_tok, ref_lp = max(first.top, key=lambda tv: tv[1])  # unbiased top-1: the reference
    ref_biased = next((v for t, v in biased.top if t == ref_tok), None)
    if not ok or ref_biased is None:
        return None
    # servers report the pick's log-prob after the bias (OpenAI: undone with the shift of
    # the reference token) or before it (llama.cpp: the shift is 0)
    shift = ref_lp - ref_biased  # log Z' - log Z
    value = biased.logprob - BIAS + shift if abs(shift) > 1e-6 else biased.logprob
    return value if math.isfinite(value) else None


def first_token_id(b: RemoteBackend, text: str) -> int | None:
    """The model's first token id of ``text`` (``None`` without a tokenizer to ask)."""
    ids = tokenize(b, text)
    return ids[0] if ids else None


#: The tokenize routes servers have, by name: (path, request body). vLLM's and bbx's
#: ``/tokenize`` read ``prompt``; llama.cpp's C++ ``llama-server`` has the same path but
#: reads ``content`` (and answers ``{"tokens": []}`` to a ``prompt``); llama-cpp-python's
#: is ``/extras/tokenize``.
#: A body is made from (the model, the text).
TOKENIZE_ROUTES: dict[str, tuple[str, Callable[[Any, str], dict[str, Any]]]] = {
    "/tokenize": ("/tokenize", lambda model, text: {"model": model, "prompt": text,
                                                    "add_special_tokens": False}),
    "/tokenize (content)": ("/tokenize", lambda model, text: {"content": text,
                                                              "add_special": False}),
    "/extras/tokenize": ("/extras/tokenize", lambda model, text: {
        "input": text, "add_special_tokens": False}),
}


def tokenize(b: RemoteBackend, text: str) -> list[int] | None:
    """``text``'s token ids from the server's tokenize route (:data:`TOKENIZE_ROUTES`), the
    first that answers with ids; ``None`` when it has none (remembered: later words skip the
    probe). The user's ``tokenizer``, when given, answers instead of the server."""
    import openai

    if b.tokenizer is not None:
        return b.tokenizer.encode(text)

    if b.tokenize_route is None:
        return None
    # routes are kept relative to the server root, and asked of an endpoint that is up
    # (with several endpoints the first may be out)
    client = b.client
    root = str(client.base_url).rstrip("/").removesuffix("/v1")
    names = [b.tokenize_route] if b.tokenize_route else list(TOKENIZE_ROUTES)
    for name in names:
        path, body = TOKENIZE_ROUTES[name]
        try:
            res = client.post(root + path, body=body(b.model, text), cast_to=object)
        except openai.APIConnectionError:
            return None  # the endpoint is down, not routeless: ask again next time
        except openai.APIStatusError:
            continue
        tokens = res.get("tokens") if isinstance(res, dict) else None
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens) and (
                tokens or not text or b.tokenize_route):
            b.tokenize_route = name
            return tokens
    b.tokenize_route = None
    return None
