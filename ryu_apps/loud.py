"""Make handler failures loud: the platform logs and then swallows exceptions in event handlers.

Every handler of the suite is wrapped. A failure is logged with a fixed marker that the test
harness greps for (a test fails if any controller logged it), and counted on the app.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

MARKER = "SDNMIG-HANDLER-EXCEPTION"


def loud(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return handler(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 -- re-raised after logging; the platform drops it anyway
            failed(self, handler.__name__)
            raise

    return wrapper


def failed(app: Any, handler: str) -> None:
    """What a handler failing does (called in an `except`): counted, logged with the marker.
    For a hot handler that inlines its try rather than pay for the wrapper's call."""
    app.handler_failures = getattr(app, "handler_failures", 0) + 1
    logging.getLogger(type(app).__name__).exception("%s in %s.%s", MARKER, type(app).__name__,
                                                    handler)
