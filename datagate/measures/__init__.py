"""Dataset-level measures shared by rules and reports: near/semantic duplicates, diversity."""

from __future__ import annotations
