"""``method: decode`` — the Multi-Prompting Decoder (Cheng et al. 2024), DecT as baseline.

Library use: :func:`blackbox.api.decode_fit`, :func:`blackbox.api.decode_predict`, or the
pieces here: :func:`~blackbox.methods.mpd.bundle.load_decoder`,
:func:`~blackbox.methods.mpd.features.query_features`, :class:`~.decoders.Decoder`.
"""

from blackbox.methods.mpd.method import run
from blackbox.methods.mpd.plan import plan
from blackbox.methods.mpd.recipe import DecodeRecipe as Recipe

__all__ = ["Recipe", "plan", "run"]
