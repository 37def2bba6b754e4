"""Errors the operator can act on: the message is one line that says what to do."""


class SdnmigError(Exception):
    """Shown to the user as `sdnmig: <message>` with exit status 2, never as a traceback."""
