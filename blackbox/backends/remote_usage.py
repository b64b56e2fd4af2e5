"""What a remote request may cost, before it is sent: the remote backend's ``usage_bounds``.

The metered wrapper checks ``budget.max_usd`` (and ``max_tokens``) on these projections
before each call and then charges what the responses' ``usage`` said
(:mod:`blackbox.backends.usage`). Remote text is not tokenized locally, so prompt tokens
are estimated from characters: a bound at :data:`BOUND_CHARS_PER_TOKEN` (English BPE
averages about four characters a token; three leaves room for denser text), a typical
value (dry runs) at :data:`TYPICAL_CHARS_PER_TOKEN`, plus the chat framing of each request.
Per item, the requests each label mode sends (:mod:`blackbox.backends.remote`):

==============  ==========================================  ================================
verb / mode     requests per item                           completion tokens per request
==============  ==========================================  ================================
extension       a share of one chunk request (prompt only)  0
echo            one per label word (prompt + word)          0
topk            one, plus (bound) one per label word when   1
                ``logit_bias`` recovery may run
generate        one                                         ``generate_max_tokens`` x
                                                            ``samples``
score / hidden  one (prompt + continuation) / one           0
generate verb   one                                         ``max_tokens`` asked (64)
==============  ==========================================  ================================
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from blackbox.backends.budget import DEFAULT_MAX_TOKENS
from blackbox.backends.usage import TokenUsage

if TYPE_CHECKING:
    from blackbox.backends.remote import RemoteBackend

BOUND_CHARS_PER_TOKEN = 3
TYPICAL_CHARS_PER_TOKEN = 4
CHAT_FRAMING_TOKENS = 8  # role markers and reply priming around each chat message


def usage_bounds(b: RemoteBackend, verb: str, items: list[dict[str, Any]], texts: list[str],
                 expected: bool = False) -> list[TokenUsage]:
    """Per item, the most its requests may cost (``expected``: their typical cost); see the
    module docs. Never probes the server: an undecided route or mode is assumed chat-like
    framing and top-k scoring."""
    per = TYPICAL_CHARS_PER_TOKEN if expected else BOUND_CHARS_PER_TOKEN

    def toks(text: str) -> int:
        return max(1, math.ceil(len(text) / per))

    info = b._info or {}
    chat = info.get("api", b.api) != "completions"
    frame = (CHAT_FRAMING_TOKENS + (toks(b.system) if b.system else 0)) if chat else 0
    mode = b.mode if b.mode != "auto" else (
        "extension" if info.get("bbx") and info.get("api") == "completions" else "topk")
    out = []
    for item, text in zip(items, texts, strict=True):
        prompt = toks(text) + frame
        words = list(item.get("label_words") or [])
        if verb == "label_logprobs" and mode == "echo":
            out.append(TokenUsage(sum(toks(text + w) for w in words), 0))
        elif verb == "label_logprobs" and mode == "topk":
            extra = 0 if expected or not b.use_logit_bias or b.bias_note is not None \
                or b.tokenize_route is None else len(words)
            out.append(TokenUsage(prompt * (1 + extra), 1 + extra))
        elif verb == "label_logprobs" and mode == "generate":
            out.append(TokenUsage(prompt, b.generate_max_tokens * b.samples))
        elif verb == "generate":
            asked = (item.get("params") or {}).get("max_tokens") or DEFAULT_MAX_TOKENS
            out.append(TokenUsage(prompt, int(asked)))
        else:  # extension label scores, score, hidden, embed: no chat framing, no reply
            out.append(TokenUsage(toks(text), 0))
    return out
