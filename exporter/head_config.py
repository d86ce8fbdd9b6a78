"""The configuration of a ToMMeR head, read from its experimaestro JSON file (pure JSON, no torch).

Both layouts hold a list of experimaestro objects (``experimaestro.json``) or ``{"objects": [...]}``
(``definition.json``); the one of type ``ToMMeR`` holds the head's fields. ``exporter/head.py``
loads heads with it and ``exporter/hub.py`` lists the published ones with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runtime.errors import ExportError


def _objects(data: Any) -> list:
    """experimaestro objects: a list (experimaestro.json) or ``{"objects": [...]}`` (definition.json)."""
    objects = data["objects"] if isinstance(data, dict) else data
    if not isinstance(objects, list):
        raise TypeError(f"expected a list of objects, found {type(objects).__name__}")
    return objects


def _is_tommer(obj: Any) -> bool:
    return isinstance(obj, dict) and (obj.get("type") == "ToMMeR" or str(obj.get("typename", "")).endswith(".ToMMeR"))


def _read_objects(path: Path) -> list:
    try:
        return _objects(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: not a readable llm2ner head configuration ({exc})") from exc


def read_head_fields(path: Path) -> dict[str, Any]:
    """The ``fields`` of the one ``ToMMeR`` object of an ``experimaestro.json`` or ``definition.json`` (pure JSON)."""
    objects = _read_objects(path)
    found = [o for o in objects if _is_tommer(o)]
    if len(found) != 1:
        kinds = sorted({str(o.get("type")) for o in objects if isinstance(o, dict)})
        raise ExportError(f"{path}: expected exactly one object of type ToMMeR, found {len(found)} (types present: {kinds})")
    fields = found[0].get("fields", {})
    missing = [k for k in ("llm_name", "layer", "rank") if k not in fields]
    if missing:
        raise ExportError(f"{path}: the ToMMeR object lacks {missing}")
    return fields
