"""Embedders: image -> unit vector (open_clip models, the weight-free pixel embedder)."""

from __future__ import annotations
