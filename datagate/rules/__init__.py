"""Judge: the rules registry, policies (YAML) and the engine that applies them to a scan."""

from __future__ import annotations
