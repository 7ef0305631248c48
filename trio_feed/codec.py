"""Events to and from JSON: one object per line, ``"type"`` first, decimals as strings.

cattrs generates one unstructure function per event class (as fast as hand-written dict
code, see trio-stack.md 4.2); orjson writes the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import cattrs
import orjson

from .events import (
    BookTicker,
    BookUpdate,
    Event,
    Kline,
    MarkPrice,
    QualityChange,
    Reconcile,
    StateChange,
    Trade,
)

__all__ = ["EVENT_TYPES", "event_from_dict", "event_to_dict", "event_to_json", "json_line"]

#: Contract type name -> event class.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        Kline,
        Trade,
        BookUpdate,
        MarkPrice,
        BookTicker,
        StateChange,
        QualityChange,
        Reconcile,
    )
}

_converter = cattrs.Converter()
_converter.register_unstructure_hook(Decimal, str)
_converter.register_structure_hook(Decimal, lambda v, _: Decimal(v))

_unstructure: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    cls: _converter.get_unstructure_hook(cls) for cls in EVENT_TYPES.values()
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event as JSON-ready data, ``"type"`` first."""
    cls = event.__class__
    return {"type": cls.TYPE, **_unstructure[cls](event)}


def event_to_json(event: Event) -> bytes:
    """The event as one JSON object (no newline)."""
    return orjson.dumps(event_to_dict(event))


def json_line(event: Event) -> bytes:
    """The event as one JSON line, newline included."""
    return orjson.dumps(event_to_dict(event), option=orjson.OPT_APPEND_NEWLINE)


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of `event_to_dict` (raises KeyError for an unknown type)."""
    fields = dict(data)
    cls = EVENT_TYPES[fields.pop("type")]
    event: Event = _converter.structure(fields, cls)
    return event
