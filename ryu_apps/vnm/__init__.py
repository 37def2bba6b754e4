"""Whole-network migration (issue 5: Tunnel ALAP and Tunnel ASAP) on the LIME shim; `core` is
the pure state machine."""
