"""The torchvision import step: a fallback only where torchvision's native ops cannot load."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import datagate.embed.torchvision_compat as compat


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torchvision not installed"
)
def test_open_clip_and_torchvision_import_after_the_step() -> None:
    proc = _run(
        "from datagate.embed.torchvision_compat import ensure_torchvision as e; s = e(); "
        "import torchvision, open_clip; import torchvision.transforms as T; "
        "T.Compose([T.Resize(8)]); print(s, e())"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    state, again = proc.stdout.split()
    assert state in ("native", "fallback") and again == state  # idempotent


def test_step_is_a_noop_when_native_ops_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_state", None)
    monkeypatch.setattr(compat, "_fallback", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(compat, "_load_native_ops", lambda package_dir: True)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: type("S", (), {"origin": "/x/__init__.py"})()
    )
    assert compat.ensure_torchvision() == "native"
    assert compat._fallback is None


def test_step_reports_absent_and_already_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_state", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert compat.ensure_torchvision() == "absent"
    monkeypatch.setattr(compat, "_state", None)
    monkeypatch.setitem(sys.modules, "torchvision", object())
    assert compat.ensure_torchvision() == "imported"


def test_native_loader_reports_failure_for_a_broken_library(tmp_path: Path) -> None:
    (tmp_path / "_C.so").write_bytes(b"not a shared object")
    assert compat._load_native_ops(tmp_path) is False
    assert compat._load_native_ops(tmp_path / "empty") is False
