"""Label scores from generated answers: the remote backend's ``label_logprobs: generate``
mode (``capabilities.label_logprobs == "generate"``), for servers that return no log-probs
at all.

Per prompt, one request for the answer on the route in use (``generate_max_tokens``,
temperature 0); the reply is mapped to a label word by
:func:`~blackbox.backends.labels.parse_reply` (exact, then case- and
whitespace-insensitive prefix, the longest word first; else unparsed). The scores are
one-hot: ``0.0`` for the chosen word, :data:`~blackbox.backends.labels.GENERATE_FLOOR`
(``-20.0``) for the others, the floor for every word when the reply is unparsed (an
argmax then picks the first label: count them in ``generate_stats``).

With ``samples: n > 1`` the one request asks for ``n`` samples (``n=n``,
``temperature=sample_temperature``, ``seed=0``) and each word scores ``log(count / m)``
over the ``m`` replies that came back (the floor when no reply chose it); a server without
``n`` (llama-cpp-python's; llama-server honours it) sends one reply, so ``m = 1`` and the
row is one-hot (``generate_stats["short_of_n"]`` counts such prompts). These are no
log-probs: methods that need real ones can read the capability and refuse, or note what
they lose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blackbox.backends.labels import parse_reply, reply_row

if TYPE_CHECKING:
    from blackbox.backends.remote import RemoteBackend


def generated_row(b: RemoteBackend, prompt: str, words: list[str],
                  extra: dict[str, Any] | None) -> list[float]:
    """One prompt's label-word scores from its generated answer(s) (module docs)."""
    kwargs: dict[str, Any] = {"max_tokens": b.generate_max_tokens, "temperature": 0.0}
    if b.samples > 1:
        # seeded, so a rerun asks for the same samples (servers honour it best-effort)
        kwargs.update(n=b.samples, temperature=b.sample_temperature, seed=0)
    texts = b.replies(prompt, kwargs, extra)
    labels = [parse_reply(t, words) for t in texts]
    with b._lock:
        b.generate_stats["replies"] += len(texts)
        b.generate_stats["unparsed"] += sum(lab is None for lab in labels)
        b.generate_stats["short_of_n"] += len(texts) < b.samples
    return reply_row(labels, len(words))
