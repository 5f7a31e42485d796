"""JSON that any reader takes back: no NaN or Infinity (null instead), no numpy types, paths as text.

Every ``--json`` output and the audit's findings go through :func:`dumps`, which refuses to write
anything ``json.loads`` with a strict ``parse_constant`` would reject."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SCHEMA_PREFIX = "badnet-inspector"


def schema(name: str, version: int = 1) -> str:
    """The schema tag each JSON output starts with: ``badnet-inspector/<name>/<version>``
    (docs/formats.md describes each)."""
    return f"{SCHEMA_PREFIX}/{name}/{version}"


def plain(value):
    """``value`` as plain JSON types: non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value, **kwargs) -> str:
    """JSON that strict readers accept: NaN and infinities as null, numpy values as plain ones."""
    return json.dumps(plain(value), allow_nan=False, **kwargs)
