"""Backends: where model queries go. See :mod:`blackbox.backends.base` for the protocol."""

from blackbox.backends.base import Backend, Capabilities, normalize_adapter
from blackbox.registry import Registry

BACKENDS = Registry("backend", "bbx.backends")
BACKENDS.register("local", "blackbox.backends.local:LocalBackend")
BACKENDS.register("fake", "blackbox.backends.fake:FakeBackend")
BACKENDS.register("remote", "blackbox.backends.remote:RemoteBackend")

__all__ = ["BACKENDS", "Backend", "Capabilities", "normalize_adapter"]
