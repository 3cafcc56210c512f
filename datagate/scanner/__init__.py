"""Measure: read shards, decode each image once, compute signals, write the scan folder."""

from __future__ import annotations
