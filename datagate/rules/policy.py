"""Rules files: a validated policy (list of per-image and dataset rules) loaded from YAML.

Validation errors name the file, line and column, the path to the bad key, what was
expected and what was found, and suggest the nearest known key or rule name for a typo, e.g.::

    rules.yaml:9:10: rules[2].max: expected a number in [0, 1], got 'high'

A rules file is read strictly: UTF-8 only; no duplicate keys (YAML would silently keep the
last); no aliases (``*name``: they make "billion laughs" files that expand to gigabytes);
numbers are numbers (``true`` or ``"0.7"`` is not a number; ``.nan`` and ``.inf`` are
refused); at least one rule, and rule ids (``id:``, default the rule name) are unique.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, create_model
from pydantic.fields import FieldInfo
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from datagate.errors import ConfigError
from datagate.rules.base import RULES, ConfigModel, Need, Rule


class Policy(ConfigModel):
    """A rules file: per-image and dataset rules, validated against the rules registry."""

    version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    review_strength: Literal["weak", "strong", "definitive"] = "strong"
    """How much a reviewed origin (an overrides file's human / synthetic) weighs as evidence."""
    unsigned_human: Literal["weak", "strong"] = "weak"
    """What a claim of human origin that no signature protects weighs (XMP/IPTC source type,
    a sidecar's declaration, camera EXIF: one line of metadata forges it): weak (default),
    or strong as read. A valid C2PA manifest's claim and a reviewer's are not affected, and
    synthetic claims always keep their strength."""
    reference: str | None = None
    """A scan folder of the preserved human baseline for the reference rules (min_coverage,
    min_recall, max_frechet); a relative path is relative to the rules file."""
    rules: list[SerializeAsAny[Rule]] = Field(default_factory=list)

    def image_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.scope == "image"]

    def dataset_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.scope == "dataset"]

    def needs(self, what: Need) -> bool:
        """Whether any rule needs ``what`` (e.g. ``vectors``: the scan must embed)."""
        return any(what in r.needs for r in self.rules)

    @classmethod
    def validate_data(cls, data: Any) -> Policy:
        """Validate a parsed rules file against the rules registered now.

        Strict: no coercion (``true`` or ``"0.7"`` is not a number, ``64.0`` not an integer).
        """
        return _validator(tuple(RULES.items())).model_validate(data, strict=True)


@functools.lru_cache(maxsize=8)
def _validator(rules: tuple[tuple[str, type[Rule]], ...]) -> type[Policy]:
    """A Policy whose ``rules`` is the discriminated union of the registered rule types."""
    members: tuple[Any, ...] = tuple(cls for _, cls in rules)
    item: Any = members[0] if len(members) == 1 else Rule
    if len(members) > 1:
        item = Annotated[Union[members], Field(discriminator="rule")]  # noqa: UP007
    model: type[Policy] = create_model(
        "Policy", __base__=Policy, rules=(list[item], Field(default_factory=list))
    )
    return model


# ----------------------------------------------------------------- loading


def default_rules_path() -> Path:
    """The policy used when no ``--rules`` is given.

    ``./rules/default.yaml`` in the working directory when present (a data repository's own
    policy), else the policy shipped with datagate.
    """
    local = Path("rules/default.yaml")
    if local.is_file():
        return local
    return Path(__file__).parent.parent / "policies" / "default.yaml"


def load_policy(path: Path) -> Policy:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: not UTF-8 text (byte {raw[exc.start]:#04x}); "
            "save the rules file as UTF-8"
        ) from None
    policy = parse_policy(text, str(path))
    if policy.reference is not None and not Path(policy.reference).is_absolute():
        policy = policy.model_copy(update={"reference": str(path.parent / policy.reference)})
    return policy


def policy_digest(policy: Policy) -> str:
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()[:16]


#: Longest rendering of a value from the file in an error message.
SHOW_CHARS = 60


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = SHOW_CHARS
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def _show(value: Any) -> str:
    """``repr`` of a value from the file, cut short (never a huge value in a message)."""
    text = _REPR.repr(value)
    return text if len(text) <= 2 * SHOW_CHARS else text[: 2 * SHOW_CHARS - 1] + "…"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: no aliases, no duplicate keys, finite numbers only."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            raise ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in rules files; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not key_node:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {_show(key)} (first at line {first.start_mark.line + 1}); "
                    "YAML would keep only the last",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def construct_finite_float(self, node: Any) -> float:
        value = float(self.construct_yaml_float(node))
        if not math.isfinite(value):
            raise ConstructorError(
                None, None, f"{node.value!r} is not a finite number", node.start_mark
            )
        return value


_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_finite_float)


def _load_yaml(text: str, source: str) -> tuple[Any, Any]:
    """The parsed document and its node tree (for the line and column of errors)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, node


def parse_policy(text: str, source: str) -> Policy:
    data, node = _load_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source}: empty rules file; expected a mapping with a 'rules' list")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with a 'rules' list at the top level, "
            f"got {type(data).__name__}"
        )
    try:
        policy = Policy.validate_data(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_errors(exc, data, source, node))) from None
    _check_rules(policy, source, node)
    return policy


def _check_rules(policy: Policy, source: str, node: Any) -> None:
    """What a schema cannot say: at least one rule, and each rule id once."""
    if not policy.rules:
        raise ConfigError(
            f"{_where(source, node, ('rules',))}rules: expected at least one rule, got none "
            "(a policy without rules would keep everything)"
        )
    first: dict[str, int] = {}
    problems: list[str] = []
    for i, rule in enumerate(policy.rules):
        earlier = first.setdefault(rule.rule_id, i)
        if earlier != i:
            problems.append(
                f"{_where(source, node, ('rules', i))}rules[{i}]: duplicate rule id "
                f"{_show(rule.rule_id)} (also rules[{earlier}]); give one of them its own `id:`"
            )
    if problems:
        raise ConfigError("\n".join(problems))


def _node_at(node: Any, loc: tuple[Any, ...]) -> Any:
    """The YAML node at a pydantic location (the deepest one that exists)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                return node
            node = match[-1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _key_node_at(node: Any, loc: tuple[Any, ...]) -> Any:
    """The key node of the last part of ``loc`` (for unknown keys), else the deepest node."""
    parent = _node_at(node, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == loc[-1]:
                return k
    return parent


def _where(source: str, node: Any, loc: tuple[Any, ...], key: bool = False) -> str:
    """``source:line:column: `` of the node at ``loc`` (``source: `` without a node tree)."""
    if node is None:
        return f"{source}: "
    loc = tuple(
        p for i, p in enumerate(loc) if not (p in RULES and i and isinstance(loc[i - 1], int))
    )
    found = _key_node_at(node, loc) if key and loc else _node_at(node, loc)
    mark = found.start_mark
    return f"{source}:{mark.line + 1}:{mark.column + 1}: "


def with_overrides(
    policy: Policy, *, min_human: float | None = None, max_rejected_fraction: float | None = None
) -> Policy:
    """Apply command-line overrides (``--min-human 0.7``) to a policy, validating them."""
    data = policy.model_dump(exclude_none=True)
    for flag, rule_name, key, value in (
        ("--min-human", "min_human", "min", min_human),
        ("--max-rejected-fraction", "max_rejected_fraction", "max", max_rejected_fraction),
    ):
        if value is None:
            continue
        matches = [r for r in data["rules"] if r["rule"] == rule_name]
        if matches:
            for r in matches:
                r[key] = value
        else:
            data["rules"].append({"rule": rule_name, key: value})
        try:
            Policy.validate_data(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(
                f"{flag}: expected {_describe_field(RULES[rule_name].model_fields[key])}, "
                f"got {_show(first.get('input'))}"
            ) from None
    return Policy.validate_data(data)


# ----------------------------------------------------------------- error messages


def _path(loc: tuple[Any, ...], data: Any) -> tuple[str, type[BaseModel] | None, Any]:
    """Render a pydantic location as ``rules[2].blur``; return the model found at it."""
    text = ""
    model: type[BaseModel] | None = Policy
    node = data
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if model is Policy and i + 1 < len(parts) and parts[i + 1] in RULES:
                model = RULES[parts[i + 1]]
                i += 1  # skip the discriminator tag pydantic inserts
            elif model is Policy:
                rule_name = node.get("rule") if isinstance(node, dict) else None
                model = RULES.get(rule_name) if isinstance(rule_name, str) else None
        else:
            text += f".{part}" if text else str(part)
            if model is not None and part in model.model_fields:
                inner = _unwrap(model.model_fields[part].annotation)
                next_model = (
                    inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
                )
                if part != "rules":
                    model = next_model
            node = node.get(part) if isinstance(node, dict) else None
        i += 1
    return text, model, node


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] / Annotated[...] to the core type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _describe_field(info: FieldInfo) -> str:
    annotation = info.annotation
    bounds: list[Any] = list(info.metadata)
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotated = typing.get_args(annotation)
            annotation = annotated[0]
            for extra in annotated[1:]:
                bounds.extend(getattr(extra, "metadata", [extra]))
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                break
            annotation = members[0]
        else:
            break
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    names: dict[Any, str] = {
        float: "a number",
        int: "an integer",
        str: "a string",
        bool: "true or false",
    }
    base = names.get(annotation)
    if base is None:
        if typing.get_origin(annotation) is list:
            return "a list"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return "a mapping with keys " + ", ".join(annotation.model_fields)
        return "a valid value"
    lo = next((b.ge for b in bounds if isinstance(b, annotated_types.Ge)), None)
    hi = next((b.le for b in bounds if isinstance(b, annotated_types.Le)), None)
    if lo is not None and hi is not None:
        return f"{base} in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{base} >= {lo:g}"
    if hi is not None:
        return f"{base} <= {hi:g}"
    return base


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def format_errors(exc: ValidationError, data: Any, source: str, node: Any = None) -> list[str]:
    """One line per problem: ``source:line:column: path: what was expected, what was found``
    (``source: path: ...`` without the YAML node tree)."""
    messages: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        got = err.get("input")
        at = _where(source, node, loc, key=kind in ("extra_forbidden", "missing"))
        if kind == "extra_forbidden":
            path, model, _ = _path(loc[:-1], data)
            key = str(loc[-1])
            known = list(model.model_fields) if model else []
            where = f"{path}.{key}" if path else key
            msg = f"{where}: unknown key {_show(key)}{_suggest(key[:100], known)}"
            if known:
                msg += f" (known keys: {', '.join(known)})"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            if kind == "union_tag_invalid":
                at = _where(source, node, (*loc, "rule"))
            path, _, found = _path(loc, data)
            names = sorted(RULES)
            if kind == "union_tag_not_found":
                msg = f"{path}: missing key 'rule' (expected one of: {', '.join(names)})"
            else:
                tag = found.get("rule") if isinstance(found, dict) else got
                msg = (
                    f"{path}.rule: unknown rule {_show(tag)}{_suggest(str(tag)[:100], names)} "
                    f"(known rules: {', '.join(names)})"
                )
        else:
            path, model, _ = _path(loc[:-1], data) if loc else ("", None, None)
            key = str(loc[-1]) if loc else ""
            where = f"{path}.{key}" if path and key else (path or key or "top level")
            if kind == "missing":
                msg = f"{where}: missing required key"
            else:
                info = model.model_fields.get(key) if model else None
                expected = _describe_field(info) if info is not None else err["msg"].lower()
                msg = f"{where}: expected {expected}, got {_show(got)}"
        messages.append(f"{at}{msg}")
    return messages
