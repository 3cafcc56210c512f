"""What a rule is: a validated config model and its logic, registered once by name.

A rule subclasses :class:`Rule`, declares its ``rule:`` name as a literal, its
``scope`` (``image``: rejects rows; ``dataset``: judges the kept set, and may filter it),
what it ``needs`` beyond the scan table (``vectors``, ``calibration``), and the reason
``codes`` it writes, then implements :meth:`Rule.apply`. :func:`register` adds it to
:data:`RULES`; the policy's validation, ``datagate rules list``, the README's rules table
and what ``enforce`` loads are all derived from that registry.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from datagate.errors import ConfigError
from datagate.measures.backend import LOCAL, Backend
from datagate.measures.diversity import Rows

if typing.TYPE_CHECKING:
    from datagate.detect.head import Calibration
    from datagate.rules.policy import Policy

#: A share in [0, 1] (rule keys such as ``min`` and ``max``).
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
ObjArray = np.ndarray[Any, np.dtype[np.object_]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

#: What a rule may need besides the scan table.
Need = Literal["vectors", "calibration", "reference"]

NO_VECTORS = (
    "the scan has no embeddings (it ran with --model none, or before embeddings existed): "
    "re-run `datagate scan` with an embedder (--model auto, pixel, or an open_clip model)"
)


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class RowVectors:
    """A scan's embeddings aligned to its table: ``vectors[i]`` belongs to row ``rows[i]``."""

    rows: IntArray
    vectors: np.ndarray[Any, np.dtype[Any]]
    embedder: str

    @classmethod
    def align(cls, table: pa.Table, keys: Any, vectors: Any, embedder: str) -> RowVectors:
        position = pc.index_in(pa.array(keys, pa.string()), value_set=table.column("key"))
        rows = np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), np.int64)
        found = rows >= 0  # vectors of rows no longer in the table are ignored
        kept = np.asarray(vectors) if found.all() else np.asarray(vectors)[found]
        return cls(rows=rows[found], vectors=kept, embedder=embedder)

    def subset(self, mask: BoolArray) -> tuple[IntArray, Any]:
        """(table rows, vectors) of the rows selected by a table-length mask."""
        pick = mask[self.rows]
        return self.rows[pick], self.vectors[pick]

    def view(self, mask: BoolArray) -> tuple[IntArray, Rows]:
        """Like :meth:`subset`, but the vectors are read on demand (a :class:`Rows`), not
        copied: a million kept vectors would otherwise be a second copy of the embeddings."""
        pick = np.flatnonzero(mask[self.rows])
        return self.rows[pick], Rows(self.vectors, pick)


@dataclass(frozen=True)
class Reference:
    """A frozen reference scan's embeddings (the preserved human baseline)."""

    vectors: np.ndarray[Any, np.dtype[Any]]
    embedder: str
    source: str


@dataclass
class Context:
    """What a rule sees: the scan table, the rows still kept, and what it declared it needs.

    ``shared`` holds what several rules (and the report) compute alike, once per run."""

    table: pa.Table
    kept: BoolArray
    policy: Policy
    vectors: RowVectors | None = None
    calibration: Calibration | None = None
    reference: Reference | None = None
    shared: dict[Any, Any] = field(default_factory=dict)
    #: where dataset-wide work (groupings, pair searches, clusters, sums) runs
    backend: Backend = LOCAL

    @property
    def n(self) -> int:
        return int(self.table.num_rows)

    def num(self, name: str, fill: float = np.nan) -> np.ndarray[Any, np.dtype[Any]]:
        """A numeric column as float64 (``fill`` for nulls, or everywhere if absent)."""
        t = self.table
        if name not in t.column_names:
            return np.full(t.num_rows, fill)
        return np.asarray(pc.fill_null(t.column(name).cast(pa.float64()), fill).to_numpy())

    def flag(self, name: str) -> BoolArray:
        """A boolean column (nulls and absence are False)."""
        t = self.table
        if name not in t.column_names:
            return np.zeros(t.num_rows, dtype=bool)
        return np.asarray(pc.fill_null(t.column(name), False).to_numpy(zero_copy_only=False))

    def text(self, name: str) -> ObjArray:
        """A column as Python objects (None where null or absent)."""
        t = self.table
        if name not in t.column_names:
            return np.full(t.num_rows, None, dtype=object)
        return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=object)

    def values_at(self, name: str, rows: Any) -> ObjArray:
        """A column's values at ``rows`` as Python objects: :meth:`text` of a few rows,
        without a Python string for every row (a million keys)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full(len(rows), None, dtype=object)
        if name in self.table.column_names and len(rows):
            out[:] = self.table.column(name).take(pa.array(rows)).to_pylist()
        return out

    def none(self) -> ObjArray:
        return np.full(self.n, None, dtype=object)


@dataclass
class Verdict:
    """What a rule decided. Image rules fill the row fields; dataset rules the outcome
    fields (and the row fields too when they filter the kept set)."""

    rejected: BoolArray | None = None
    reasons: ObjArray | None = None
    #: per rejected row, one of the rule's declared reason codes
    codes: ObjArray | str | None = None
    #: per rejected duplicate, the key of the kept original
    duplicate_of: ObjArray | None = None
    passed: bool | None = None
    code: str | None = None
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Rule(ConfigModel):
    """Base of every rule: ``id`` is written on rejected rows (default: the rule name)."""

    id: str | None = None
    scope: ClassVar[Literal["image", "dataset"]] = "image"
    needs: ClassVar[frozenset[Need]] = frozenset()
    #: scan-table columns the rule cannot judge without (see :meth:`required_columns`)
    columns: ClassVar[frozenset[str]] = frozenset()
    #: reason code -> what it means (every code a verdict carries is declared here)
    codes: ClassVar[dict[str, str]] = {}
    #: whether the rule removes copies of kept images (reports list these as duplicates)
    removes_duplicates: ClassVar[bool] = False

    @classmethod
    def name(cls) -> str:
        """The rule type (the ``rule:`` key), declared by each subclass as a literal."""
        return str(typing.get_args(cls.model_fields["rule"].annotation)[0])

    @property
    def rule_name(self) -> str:
        return self.name()

    @property
    def rule_id(self) -> str:
        return self.id or self.rule_name

    def apply(self, ctx: Context) -> Verdict:
        raise NotImplementedError

    def required_columns(self) -> frozenset[str]:
        """The columns this configuration reads: a scan without them cannot be judged."""
        return self.columns

    @classmethod
    def doc(cls) -> str:
        """The first paragraph of the class docstring: what the rule does."""
        text = (cls.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(text.split())


#: rule name -> rule class, in registration order
RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Add a rule class to the registry (a class decorator)."""
    if "rule" not in cls.model_fields:
        raise TypeError(f"{cls.__name__}: a rule declares `rule: Literal['name']`")
    name = cls.name()
    if name in RULES and RULES[name] is not cls:
        other = RULES[name].__name__
        raise ConfigError(f"rule {name!r} is registered twice ({other}, {cls.__name__})")
    if not cls.__doc__:
        raise TypeError(f"{cls.__name__}: a rule documents itself in its docstring")
    RULES[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a rule (for plugins and tests that add one for a while)."""
    RULES.pop(name, None)


def reasons(n: int, mask: BoolArray, make: Callable[[int], str]) -> ObjArray:
    """A reason per row of ``mask`` (None elsewhere)."""
    out = np.full(n, None, dtype=object)
    for row in np.flatnonzero(mask).tolist():
        out[row] = make(row)
    return out


@dataclass(frozen=True)
class Bound:
    """One threshold check, described as e.g. ``width 32 < min_width 64``."""

    label: str
    values: np.ndarray[Any, np.dtype[Any]]
    op: str  # "<" fails below the limit, ">" above it
    limit: float
    limit_name: str
    value_format: str = ".3g"
    #: the column is float32: compare at its precision, so a value stored from exactly the
    #: limit (0.02 is 0.0199999996 in float32) is not outside it
    float32: bool = False

    def failing(self) -> BoolArray:
        values: np.ndarray[Any, Any] = self.values
        limit: np.floating[Any] = np.float64(self.limit)
        if self.float32:
            values, limit = values.astype(np.float32), np.float32(self.limit)
        return (values < limit) if self.op == "<" else (values > limit)

    def describe(self, row: int) -> str:
        return (
            f"{self.label} {self.values[row]:{self.value_format}} {self.op} "
            f"{self.limit_name} {self.limit:g}"
        )


def bounds_verdict(ctx: Context, bounds: list[Bound], code: str) -> Verdict:
    """Reject kept rows failing any bound; the reason lists every bound a row fails."""
    if not bounds:
        return Verdict(rejected=np.zeros(ctx.n, dtype=bool))
    masks = [b.failing() for b in bounds]
    bad = ctx.kept & np.logical_or.reduce(masks)

    def reason(row: int) -> str:
        return "; ".join(b.describe(row) for b, m in zip(bounds, masks) if m[row])

    return Verdict(rejected=bad, reasons=reasons(ctx.n, bad, reason), codes=code)


def ceiling_verdict(
    rule: Rule, share: float, limit: float, what: str, details: dict[str, Any] | None = None
) -> Verdict:
    """A dataset ceiling: pass while ``share`` <= ``limit``; codes ``<rule>.ok|exceeded``."""
    passed = share <= limit
    return Verdict(
        passed=passed,
        code=f"{rule.rule_name}.{'ok' if passed else 'exceeded'}",
        value=share,
        threshold=limit,
        details=details or {},
        message=f"{what} ({share:.1%}) {'<=' if passed else '>'} {limit:.0%}",
    )
