"""``bbx serve``: an OpenAI-compatible HTTP server over any Backend, with bbx extensions.

:func:`~blackbox.serve.app.create_app` builds the ASGI app; the routes live in
:mod:`~blackbox.serve.openai_routes` (OpenAI's) and :mod:`~blackbox.serve.bbx_routes`
(the extensions); :mod:`~blackbox.serve.service` holds the model side and the dynamic
batcher. Importing this package is cheap: FastAPI loads in ``create_app``.
"""

from __future__ import annotations

from typing import Any


def create_app(backend: Any, **kwargs: Any) -> Any:
    """Build the server's ASGI app (see :func:`blackbox.serve.app.create_app`)."""
    from blackbox.serve.app import create_app as _create

    return _create(backend, **kwargs)


__all__ = ["create_app"]
