"""Error texts as an HTTP client should read them: no server paths, no command-line advice.

The library's messages are written for someone at the server's command line: they name
files on its disk and flags of ``dsu`` (``pass --downmix``, ``a smaller --batch-size``).
A client of the service can use neither, so every message that leaves the service in an
answer, a job or a webhook goes through :class:`PublicText` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dsu.errors import BadAudio, DSUError

# Advice that only makes sense at the command line, and what a client can do instead.
_ADVICE = (
    (re.compile(r"pass --downmix to mix it down to (\w+)"), r"mix it down to \1 before sending it"),
    (
        re.compile(r"retry with a smaller --batch-size or --segment"),
        "retry later, or send shorter audio",
    ),
)
# Whatever advice is left that names a flag or a dsu command is cut at its clause.
_LEFTOVER = re.compile(r"(?:[;:(]\s*|\s)[^;:(]*(?:\s--[a-z][\w-]*|`dsu [^`]*`)[^;:)]*\)?")


@dataclass
class PublicText:
    """Rewrites messages for clients.

    Args:
        places: server directories and what to call them instead, e.g. the data dir as
            ``the server's storage``; a path inside one is replaced whole, and the longest
            match wins.
    """

    places: dict[str, str] = field(default_factory=dict)

    def add_place(self, path: Path | None, name: str) -> None:
        if path is not None:
            self.places[str(path)] = name
            self.places[str(path.resolve())] = name

    def of(self, exc: DSUError, input_path: Path | None = None, label: str = "the audio") -> str:
        """``exc``'s message for a client; ``input_path`` is called ``label``."""
        if isinstance(exc, BadAudio) and input_path is not None and exc.path == str(input_path):
            return self.clean(f"{label}: {exc.problem}")
        message = exc.message
        if input_path is not None:
            message = message.replace(str(input_path), label)
        return self.clean(message)

    def clean(self, message: str) -> str:
        """``message`` without server paths and command-line advice."""
        for path in sorted(self.places, key=len, reverse=True):
            # The whole path, to its end: what lies inside the server's directories is
            # none of the client's business either.
            name = self.places[path]
            message = re.sub(re.escape(path) + r"[^\s:;,'\"]*", lambda _, name=name: name, message)
        for pattern, replacement in _ADVICE:
            message = pattern.sub(replacement, message)
        return _LEFTOVER.sub("", message).strip()
