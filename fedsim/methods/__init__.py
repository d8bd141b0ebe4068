"""The methods fedsim runs: one module per method family, each declaring its spec keys (``KEYS``)
and its descriptors (``METHODS``, :class:`fedsim.method.Method`). Nothing here lists them: a new
module is a new method (docs/plugins.md, "Adding a method")."""

import sys

from fedsim.method import discover

KEYS, METHODS = discover(sys.modules[__name__])
