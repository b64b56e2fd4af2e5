"""bbx: adapt language models you can only reach as a service.

The import package is ``blackbox``; the command line is ``bbx``. Importing this package is
cheap: heavy libraries (torch, transformers, nevergrad, ...) load inside the modules that use
them, so that ``bbx --help`` stays fast.
"""

from blackbox.errors import BbxError, BudgetExceeded

__version__ = "0.1.0"

__all__ = ["BbxError", "BudgetExceeded", "__version__"]
