"""Least-recently-used cache of loaded models.

A worker keeps several :class:`dsu.api.Separator` instances warm so that switching
between them costs a dictionary look-up, not a reload. Two limits evict the least recently
used model: a count (``--max-loaded-models``) and a memory budget (``--memory-budget``,
compared with what each model added to the process's RSS and GPU memory when it loaded).
The cache only decides; the caller unloads what it evicts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelKey:
    """What makes two loaded models interchangeable."""

    name: str
    device: str
    precision: str


@dataclass
class CachedModel:
    """One warm model and what it cost to load it.

    Attributes:
        key: canonical name, device and precision.
        separator: the loaded ``dsu.api.Separator``.
        base_options: its engine options as loaded; requests override them one by one.
        cost_bytes: memory it added when it loaded (RSS plus GPU).
        load_seconds: how long loading took.
    """

    key: ModelKey
    separator: Any
    base_options: Any = None
    cost_bytes: int = 0
    load_seconds: float = 0.0


class ModelCache:
    """LRU set of :class:`CachedModel`, safe to read from another thread.

    Args:
        max_models: at most this many models stay loaded (>= 1).
        budget_bytes: evict until the loaded models' costs fit, None for no budget. The
            most recently used model always stays, even if it alone exceeds the budget.
    """

    def __init__(self, max_models: int, budget_bytes: int | None = None) -> None:
        if max_models < 1:
            raise ValueError("max_models must be >= 1")
        self.max_models = max_models
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[ModelKey, CachedModel] = OrderedDict()
        self._aliases: dict[str, ModelKey] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def lookup(self, name: str) -> CachedModel | None:
        """The warm model ``name`` (canonical or an alias seen before) names, marked used."""
        with self._lock:
            key = self._aliases.get(name)
            if key is None:
                key = next((k for k in self._items if k.name == name), None)
            item = None if key is None else self._items.get(key)
            if item is not None:
                self._items.move_to_end(item.key)
            return item

    def alias(self, name: str, key: ModelKey) -> None:
        """Remember that requests for ``name`` mean the loaded model ``key``."""
        with self._lock:
            if key in self._items:
                self._aliases[name] = key

    def make_room(self) -> list[CachedModel]:
        """Evict least recently used models so that one more fits under the count limit."""
        with self._lock:
            evicted = []
            while len(self._items) >= self.max_models:
                evicted.append(self._pop_oldest())
            return evicted

    def put(self, item: CachedModel, aliases: tuple[str | None, ...] = ()) -> list[CachedModel]:
        """Add a freshly loaded model as most recently used; return what must be unloaded.

        ``aliases`` are the names requests used for it, so the next look-up is one step.
        """
        with self._lock:
            self._items[item.key] = item
            self._items.move_to_end(item.key)
            for name in aliases:
                if name is not None:
                    self._aliases[name] = item.key
            evicted = []
            while len(self._items) > self.max_models or (
                self.budget_bytes is not None
                and len(self._items) > 1
                and self._total() > self.budget_bytes
            ):
                evicted.append(self._pop_oldest())
            return evicted

    def remove_name(self, name: str) -> list[CachedModel]:
        """Take every loaded variant of a model (by canonical name or alias) out."""
        with self._lock:
            keys = {k for k in self._items if k.name == name}
            if name in self._aliases:
                keys.add(self._aliases[name])
            removed = [self._items.pop(k) for k in keys if k in self._items]
            self._forget(keys)
            return removed

    def clear(self) -> list[CachedModel]:
        with self._lock:
            removed = list(self._items.values())
            self._items.clear()
            self._aliases.clear()
            return removed

    def items(self) -> list[CachedModel]:
        """Loaded models, most recently used first."""
        with self._lock:
            return list(reversed(self._items.values()))

    def total_bytes(self) -> int:
        with self._lock:
            return self._total()

    def _total(self) -> int:
        return sum(item.cost_bytes for item in self._items.values())

    def _pop_oldest(self) -> CachedModel:
        key, item = self._items.popitem(last=False)
        self._forget({key})
        return item

    def _forget(self, keys: set[ModelKey]) -> None:
        for alias in [a for a, k in self._aliases.items() if k in keys]:
            del self._aliases[alias]
