"""Report: one JSON-able report built from a decision, rendered as Markdown and HTML."""

from __future__ import annotations
