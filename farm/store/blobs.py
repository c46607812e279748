"""Compact, compressed JSON for bulky columns (markers)."""

from __future__ import annotations

import json
import zlib
from typing import Any


def pack(obj: Any) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 6)


def unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))
