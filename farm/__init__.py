"""farm: measure deep-learning inference on real boards.

This file stays tiny on purpose: the engine (``farm/engine``) ships to boards
inside a zip together with this file, and boards have only the standard library
and torch.
"""

__version__ = "0.1.0"
