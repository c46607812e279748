"""A float series small enough to ride inside a JSON result: float32, zlib, base64.

Per-inference energies (a thousand values a task) are kept with the energy
report so a nightly comparison can test them, not only their mean. float32
keeps seven significant digits, far below any meter's resolution; the text is
about 5 kB for a thousand values.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np

ENCODING = "f32le-zlib-base64"


def encode(values: np.ndarray) -> str:
    raw = np.asarray(values, dtype="<f4").tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode(text: str, encoding: str = ENCODING) -> np.ndarray:
    if encoding != ENCODING:
        raise ValueError(f"unknown series encoding {encoding!r} (expected {ENCODING})")
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f4").astype(np.float64)
