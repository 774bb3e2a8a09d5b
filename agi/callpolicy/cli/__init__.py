"""The ops CLI: argument parsing and rendering (`callpolicy = "callpolicy.cli:main"`)."""

from .commands import main

__all__ = ["main"]
