"""The persistent worker: DSU's JSON-lines protocol over stdio (DESIGN §3).

One process keeps models warm and answers one JSON object per line. The reader thread
answers quick commands at once; model work runs one request at a time in arrival order.
This package imports no torch at module level: the worker announces ``ready`` before the
heavy libraries load.
"""

from __future__ import annotations

from dsu.worker.protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
