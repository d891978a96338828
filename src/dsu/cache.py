"""The warm-model cache the worker and the service share.

Loaded :class:`dsu.api.Separator` instances are kept so that switching between them
costs a dictionary look-up, not a reload. Two limits evict the least recently used
model: a count (the worker's ``--max-loaded-models``; the service keeps one) and a memory
budget (the worker's ``--memory-budget``), compared with what each model added to the
process's RSS and GPU memory when it loaded. :meth:`ModelCache.acquire` resolves a name
to its registry entry once, loads on a miss and unloads what it evicts.

This module imports neither torch nor the API at import time: the worker announces
``ready`` before they load.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsu.engine.options import DEFAULT_PRECISION
from dsu.memory import gpu_allocated, parameter_bytes, rss_bytes

if TYPE_CHECKING:
    from dsu.api import Separator
    from dsu.registry.entry import ModelEntry


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
        cost_bytes: memory it added when it loaded (RSS plus GPU).
        load_seconds: how long loading took.
    """

    key: ModelKey
    separator: Any
    cost_bytes: int = 0
    load_seconds: float = 0.0


class ModelCache:
    """LRU set of :class:`CachedModel`, safe to read from another thread.

    Args:
        max_models: at most this many models stay loaded (>= 1).
        budget_bytes: evict until the loaded models' costs fit, None for no budget. The
            most recently used model always stays, even if it alone exceeds the budget.
    """

    def __init__(self, max_models: int = 1, budget_bytes: int | None = None) -> None:
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

    # loading

    def acquire(
        self,
        name: str | None,
        *,
        models_dir: Path | None,
        device: str,
        precision: str = DEFAULT_PRECISION,
        accept: Callable[[ModelEntry], None] | None = None,
        on_load: Callable[[], None] | None = None,
    ) -> tuple[CachedModel, bool]:
        """The warm model ``name`` names, loading it on a miss.

        Args:
            name: a registry name or alias; None takes the directory's default (or the
                built-in ``center``).
            models_dir: the models directory names resolve in.
            device, precision: how a model loaded now is placed.
            accept: called with the resolved entry (not on a hit by name); raises to
                refuse it.
            on_load: called just before a model is loaded (not on a hit).

        Returns:
            The cached model and whether it was already loaded.

        Raises:
            DSUError: an unknown name, a refused entry or a failed load.
        """
        if name is not None:
            hit = self.lookup(name)
            if hit is not None:
                return hit, True
        from dsu.registry.registry import Registry

        registry = Registry.open(models_dir)
        entry = registry.resolve(name)
        if accept is not None:
            accept(entry)
        hit = self.lookup(entry.name)
        if hit is not None:
            self.alias(name or entry.name, hit.key)
            return hit, True
        if on_load is not None:
            on_load()
        for old in self.make_room():
            release(old)
        item = _load(entry, models_dir, device, precision)
        for old in self.put(item, aliases=(name, entry.name)):
            release(old)
        return item, False

    # the LRU set

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
        """Take every model out; the caller releases them."""
        with self._lock:
            removed = list(self._items.values())
            self._items.clear()
            self._aliases.clear()
            return removed

    def items(self) -> list[CachedModel]:
        """Loaded models, most recently used first."""
        with self._lock:
            return list(reversed(self._items.values()))

    def newest(self) -> CachedModel | None:
        """The most recently used model, None when the cache is empty."""
        with self._lock:
            return next(reversed(self._items.values()), None)

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


def _load(entry: ModelEntry, models_dir: Path | None, device: str, precision: str) -> CachedModel:
    """Build and load the Separator of ``entry``, measuring what it costs."""
    from dsu.api import Separator

    separator: Separator = Separator(
        entry, models_dir=models_dir, device=device, precision=precision
    )
    rss_before, gpu_before = rss_bytes() or 0, gpu_allocated()
    started = time.perf_counter()
    separator.load()
    seconds = time.perf_counter() - started
    measured = max(0, (rss_bytes() or 0) - rss_before) + max(0, gpu_allocated() - gpu_before)
    # Allocator reuse can hide what a load added; the weights themselves are a floor.
    cost = max(measured, parameter_bytes(separator.model))
    key = ModelKey(separator.name, str(separator.device), precision)
    return CachedModel(key, separator, cost_bytes=cost, load_seconds=seconds)


def release(item: CachedModel) -> None:
    """Unload an evicted or removed model and hand its memory back."""
    item.separator.unload()
    gc.collect()
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
