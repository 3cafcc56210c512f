"""Per-image checks on what the integrity and quality signals measured."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from datagate.rules.base import (
    Bound,
    ConfigModel,
    Context,
    Rule,
    Verdict,
    bounds_verdict,
    reasons,
    register,
)

FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


@register
class Decodable(Rule):
    """Reject images that cannot be read or decoded (the reason carries the decoder's error)."""

    rule: Literal["decodable"]
    columns = frozenset({"decodable"})
    codes = {"not_decodable": "the file could not be read or decoded"}

    def apply(self, ctx: Context) -> Verdict:
        bad = ctx.kept & ~ctx.flag("decodable")
        errors = ctx.text("error")
        why = reasons(ctx.n, bad, lambda r: f"not decodable: {errors[r] or 'unknown error'}")
        return Verdict(rejected=bad, reasons=why, codes="not_decodable")


@register
class Dimensions(Rule):
    """Reject images narrower, shorter, wider or taller than the given pixel bounds."""

    rule: Literal["dimensions"]
    columns = frozenset({"width", "height"})
    min_width: Annotated[int, Field(ge=1)] | None = None
    min_height: Annotated[int, Field(ge=1)] | None = None
    max_width: Annotated[int, Field(ge=1)] | None = None
    max_height: Annotated[int, Field(ge=1)] | None = None
    codes = {"dimensions_out_of_bounds": "width or height outside the bounds"}

    def apply(self, ctx: Context) -> Verdict:
        sizes = {"width": ctx.num("width"), "height": ctx.num("height")}
        bounds = [
            Bound(label, sizes[label], op, limit, key, ".0f")
            for label, op, key in (
                ("width", "<", "min_width"),
                ("height", "<", "min_height"),
                ("width", ">", "max_width"),
                ("height", ">", "max_height"),
            )
            if (limit := getattr(self, key)) is not None
        ]
        return bounds_verdict(ctx, bounds, "dimensions_out_of_bounds")


@register
class Formats(Rule):
    """Reject images whose decoded format is not in ``allow`` (case-insensitive; jpg = jpeg)."""

    rule: Literal["formats"]
    columns = frozenset({"format"})
    allow: list[str]
    codes = {"format_not_allowed": "the image format is not in the allowed list"}

    def apply(self, ctx: Context) -> Verdict:
        allow = {FORMAT_ALIASES.get(f.upper(), f.upper()) for f in self.allow}
        fmt = ctx.text("format")
        known = np.array([f is not None for f in fmt], dtype=bool)
        ok = np.array([f in allow for f in fmt], dtype=bool)
        bad = ctx.kept & known & ~ok
        listed = ", ".join(sorted(allow))
        why = reasons(ctx.n, bad, lambda r: f"format {fmt[r]} not in allowed formats [{listed}]")
        return Verdict(rejected=bad, reasons=why, codes="format_not_allowed")


class Range(ConfigModel):
    min: float | None = None
    max: float | None = None


QUALITY_MEASURES = ("brightness", "contrast", "blur", "entropy", "aspect_ratio")


@register
class QualityCheck(Rule):
    """Reject images whose brightness, contrast, blur (Laplacian variance), entropy or aspect
    ratio falls outside a ``{min, max}`` range."""

    rule: Literal["quality"]
    brightness: Range | None = None
    contrast: Range | None = None
    blur: Range | None = None
    entropy: Range | None = None
    aspect_ratio: Range | None = None
    codes = {"quality_out_of_bounds": "a quality measure outside its range"}

    def required_columns(self) -> frozenset[str]:
        return frozenset(m for m in QUALITY_MEASURES if getattr(self, m) is not None)

    def apply(self, ctx: Context) -> Verdict:
        bounds: list[Bound] = []
        for name in QUALITY_MEASURES:
            limits: Range | None = getattr(self, name)
            if limits is None:
                continue
            values = ctx.num(name)
            if limits.min is not None:
                bounds.append(Bound(name, values, "<", limits.min, "min", float32=True))
            if limits.max is not None:
                bounds.append(Bound(name, values, ">", limits.max, "max", float32=True))
        return bounds_verdict(ctx, bounds, "quality_out_of_bounds")
