"""Rule documentation derived from the registry: ``datagate rules list`` and the README."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
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


def attribute_docs(cls: type[ConfigModel]) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), read from the
    sources of the class and its bases, a subclass's own winning. Read here, on demand,
    rather than by pydantic when every rule class is built: that parse of every rule's
    source cost ~0.3 s of every command's start."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, ConfigModel)):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (e.g. defined interactively)
            continue
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def params(cls: type[Rule]) -> list[Param]:
    """A rule's keys (besides ``rule`` and ``id``) with type, default and description."""
    found = []
    described = attribute_docs(cls)
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
        doc = " ".join((info.description or described.get(name, "")).split())
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
