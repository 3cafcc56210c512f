"""Make ``torchvision`` importable next to a CPU build of torch when its native ops cannot load.

PyPI's torchvision wheels are CUDA builds; next to a CPU-only torch their ``_C`` extension
fails to load, and ``import torchvision`` then dies in ``torchvision._meta_registrations``
with ``operator torchvision::nms does not exist``. open_clip and timm import torchvision
only for transforms, which need no native ops. :func:`ensure_torchvision` declares the two
operator schemas that import touches (without implementations: calling ``nms`` still raises
torchvision's own clear error). Where the extension loads normally it changes nothing.
Call it before importing torchvision, open_clip or timm.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

#: Operators torchvision registers fake kernels for unconditionally at import.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fallback: Any = None  # keeps the torch.library.Library alive (its defs vanish with it)
_state: str | None = None


def _load_native_ops(package_dir: Path) -> bool:
    import torch

    for lib in sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(lib))  # type: ignore[no-untyped-call]
            return True
        except (OSError, ImportError, RuntimeError):
            return False
    return False


def ensure_torchvision() -> str:
    """Prepare torchvision's import; returns 'absent', 'imported', 'native' or 'fallback'."""
    global _fallback, _state
    if _state is not None:
        return _state
    if "torchvision" in sys.modules:
        _state = "imported"
        return _state
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _state = "absent"
        return _state
    if _load_native_ops(Path(spec.origin).parent):
        _state = "native"
        return _state
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")  # type: ignore[no-untyped-call]
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        if not hasattr(torch.ops.torchvision, name):
            library.define(schema)  # type: ignore[no-untyped-call]
    _fallback = library
    _state = "fallback"
    return _state
