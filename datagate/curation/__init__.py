"""Curate: the decisions people make about images (overrides, keyed by content) and the
top-up from reserve data that the gate uses when a floor fails."""

from __future__ import annotations
