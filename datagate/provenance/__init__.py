"""Provenance evidence: C2PA, IPTC/XMP, EXIF, generator metadata, sidecars, watermarks."""

from __future__ import annotations
