"""What the registries share: functions named as text, so a registry loads without torch, and
views of one field of every entry.

A function is named "lsqueeze.<module>:<function>" (any importable module works, e.g. a test's);
lsqueeze.runtime.fingerprint follows such names into the jobs that run them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def load_function(ref: str):
    """The function `ref` ("module:function") names."""
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{ref!r}: not a function reference ('module:function')")
    return getattr(importlib.import_module(module), name)


class FieldView(Mapping):
    """{entry name: entry.<field>} over a registry, read on every access, so an entry added to
    the registry (a new dataset) is seen by every reader; entries whose field is None left out."""

    def __init__(self, registry: dict, field: str):
        self._registry, self._field = registry, field

    def _items(self) -> dict:
        return {k: getattr(v, self._field) for k, v in self._registry.items()
                if getattr(v, self._field) is not None}

    def __getitem__(self, key):
        value = getattr(self._registry[key], self._field)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self):
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())
