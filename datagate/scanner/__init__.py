"""Measure: read shards, decode each image once, compute signals, write the scan folder.

``readers`` find shards and yield records; ``decode`` turns bytes into one bounded
analysis image; ``signals`` measure it; ``compute`` runs them on one record or chunk;
``executors`` schedule chunks; ``engine.scan`` ties them together, with the ``cache`` store
and the ``embedding`` stage.
"""

from __future__ import annotations
