"""Shared parts of the toolkit: the platform compatibility module, controller instances, the CLI."""
