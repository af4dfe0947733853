"""One-line error text, for audit records and command-line messages (never a traceback)."""

from __future__ import annotations


def one_line(exc: BaseException | str, limit: int = 300, *, with_type: bool = True) -> str:
    """``exc`` on one line of at most ``limit`` characters: every run of whitespace (newlines
    too) becomes one space. An exception reads ``Type: message`` (only its message when not
    ``with_type``), or its type name alone when its message is empty."""
    if isinstance(exc, BaseException):
        text = " ".join(str(exc).split())
        if not text:
            text = type(exc).__name__
        elif with_type:
            text = f"{type(exc).__name__}: {text}"
    else:
        text = " ".join(exc.split())
    return text[:limit]
