"""Shim for tools that still need setup.py (Ryu's Python 3.9 environment uses setuptools<58)."""
from setuptools import setup

setup()
