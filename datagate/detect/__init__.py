"""Synthetic-content detection: detector heads over embeddings and the human-share estimate."""

from __future__ import annotations
