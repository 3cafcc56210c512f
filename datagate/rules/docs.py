"""Rule documentation derived from the registry: ``datagate rules list`` and the README."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic_core import PydanticUndefined

from datagate.rules.base import RULES, ConfigModel, Rule


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    doc: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " | ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return "{" + ", ".join(annotation.model_fields) + "}"
    return getattr(annotation, "__name__", str(annotation))


def params(cls: type[Rule]) -> list[Param]:
    """A rule's keys (besides ``rule`` and ``id``) with type, default and description."""
    found = []
    for name, info in cls.model_fields.items():
        if name in ("rule", "id"):
            continue
        if info.is_required():
            default = "required"
        elif info.default is PydanticUndefined or info.default is None:
            default = (
                "—"
                if info.default_factory is None
                else repr(info.get_default(call_default_factory=True))
            )
        else:
            default = repr(info.default)
        doc = " ".join((info.description or "").split())
        found.append(Param(name, _type_name(info.annotation), default, doc))
    return found


def describe() -> list[tuple[type[Rule], list[Param]]]:
    return [(cls, params(cls)) for cls in RULES.values()]


def markdown_table() -> str:
    """The README's rules table: one row per rule, generated from the registry."""
    lines = [
        "| rule | scope | what it does | keys (default) | reason codes |",
        "|---|---|---|---|---|",
    ]
    for cls, keys in describe():
        listed = "<br>".join(f"`{p.name}` ({p.default})" for p in keys) or "—"
        codes = "<br>".join(f"`{c}`" for c in cls.codes)
        needs = f" Needs: {', '.join(sorted(cls.needs))}." if cls.needs else ""
        cells = [f"`{cls.name()}`", cls.scope, cls.doc() + needs, listed, codes]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
