"""The rule engine: per-image rules reject rows, dataset rules judge the kept set.

Per-image rules run in policy order over the rows no earlier rule rejected; each returns a
boolean mask, a reason and a reason code per rejected row. Dataset rules then measure the
kept set against thresholds (and may filter it first). Only thresholds live here: the
signals were measured at scan time, so changing a rule never needs a re-scan.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datagate.contract import RuleOutcomeInfo
from datagate.errors import InputError
from datagate.measures.backend import LOCAL, Backend
from datagate.rules.base import (
    BoolArray,
    Context,
    ObjArray,
    Reference,
    RowVectors,
    Rule,
    Verdict,
)
from datagate.rules.policy import Policy

if TYPE_CHECKING:
    from datagate.detect.head import Calibration


@dataclass
class RuleOutcome:
    id: str
    rule: str
    scope: str  # "image" or "dataset"
    params: dict[str, Any]
    rejected: int = 0
    passed: bool | None = None  # dataset rules, and image rules that cannot be evaluated
    code: str | None = None
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def info(self) -> RuleOutcomeInfo:
        """The outcome as report.json records it."""
        return {
            "id": self.id,
            "rule": self.rule,
            "scope": "image" if self.scope == "image" else "dataset",
            "params": self.params,
            "rejected": self.rejected,
            "passed": self.passed,
            "code": self.code,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "details": self.details,
        }


@dataclass
class Decision:
    kept: BoolArray
    rule_id: ObjArray
    reason: ObjArray
    reason_code: ObjArray
    duplicate_of: ObjArray  # key of the kept original, for rows rejected as duplicates
    outcomes: list[RuleOutcome]
    #: what rules computed once for the run (e.g. reference measures), for the report
    shared: dict[Any, Any] = field(default_factory=dict)
    #: rows no rule may reject (a reviewer said keep)
    exempt: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: rule id -> seconds its judgement took (report.json's ``timing``)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed is not False for o in self.outcomes)


def _params(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(exclude={"id", "rule"}, exclude_none=True)


def check_columns(table: pa.Table, policy: Policy) -> None:
    """Refuse (exit 2) a scan that lacks a column some rule of ``policy`` reads."""
    present = set(table.column_names)
    problems = []
    for index, rule in enumerate(policy.rules):
        missing = sorted(rule.required_columns() - present)
        if missing:
            signals = _signals_of(missing)
            problems.append(
                f"rules[{index}] ({rule.rule_id}) reads {', '.join(map(repr, missing))}, which "
                f"the scan does not have"
                + (f" (measured by the {', '.join(signals)} signal)" if signals else "")
            )
    if problems:
        raise InputError(
            "the scan cannot be judged by this policy: " + "; ".join(problems),
            hint="re-scan with those signals (datagate scan --signals ...), or drop the rules",
        )


def _signals_of(columns: list[str]) -> list[str]:
    from datagate.scanner.signals import SIGNALS

    return sorted(
        name for name, cls in SIGNALS.items() if {f.name for f in cls.fields} & set(columns)
    )


def apply_policy(
    table: pa.Table,
    policy: Policy,
    vectors: RowVectors | None = None,
    calibration: Calibration | None = None,
    reference: Reference | None = None,
    *,
    exempt: BoolArray | None = None,
    prejudged: tuple[BoolArray, ObjArray, str, str] | None = None,
    backend: Backend = LOCAL,
) -> Decision:
    """Judge a scan table. ``vectors``: its embeddings; ``calibration``: the calibration of
    the detector head whose scores the table carries (from the scan's meta.json);
    ``reference``: a reference scan's embeddings for the reference rules. ``exempt`` rows
    are never rejected (reviewed ``keep``); ``prejudged`` = (mask, reasons, rule id, reason
    code) rejects rows before any rule runs (reviewed ``reject``). ``backend``: where the
    dataset-wide work runs (this process, or a Ray cluster)."""
    n = table.num_rows
    none = np.full(n, None, dtype=object)
    decision = Decision(
        kept=np.ones(n, dtype=bool),
        rule_id=none.copy(),
        reason=none.copy(),
        reason_code=none.copy(),
        duplicate_of=none.copy(),
        outcomes=[],
        exempt=exempt if exempt is not None else np.zeros(n, dtype=bool),
    )
    if prejudged is not None:
        mask, reasons, rule_id, code = prejudged
        decision.kept[mask] = False
        decision.rule_id[mask], decision.reason[mask] = rule_id, reasons[mask]
        decision.reason_code[mask] = code
    check_columns(table, policy)
    ordered = [r for r in policy.rules if r.scope == "image"]
    ordered += [r for r in policy.rules if r.scope == "dataset"]
    for rule in ordered:
        ctx = Context(
            table,
            decision.kept.copy(),
            policy,
            vectors,
            calibration,
            reference,
            decision.shared,
            backend,
        )
        started = time.perf_counter()
        verdict = rule.apply(ctx)
        decision.seconds[rule.rule_id] = round(time.perf_counter() - started, 3)
        return_memory()  # what the rule freed, before the next one allocates its own
        _check_code(rule, verdict)
        count = _reject(decision, rule, verdict)
        outcome = RuleOutcome(
            id=rule.rule_id,
            rule=rule.rule_name,
            scope=rule.scope,
            params=_params(rule),
            rejected=count,
            passed=verdict.passed,
            code=verdict.code,
            value=verdict.value,
            threshold=verdict.threshold,
            message=verdict.message,
            details=verdict.details,
        )
        if rule.scope == "image" and not outcome.message:
            outcome.message = f"rejected {count:,} image{'s' if count != 1 else ''}"
        decision.outcomes.append(outcome)
    return decision


def return_memory() -> None:
    """Hand freed memory back to the system: Arrow's pool keeps what it freed for reuse,
    and glibc's heap what numpy freed in arrays under its (growing) mmap threshold, so
    without this a run's resident size ratchets up to the sum of its steps' peaks (at a
    million rows, ~0.4 GB over the data). A few milliseconds."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


_TRIM = _malloc_trim()


def _reject(decision: Decision, rule: Rule, verdict: Verdict) -> int:
    """Apply a verdict's rejections to the rows still kept; returns how many it rejected."""
    if verdict.rejected is None:
        return 0
    newly = verdict.rejected & decision.kept & ~decision.exempt
    if not newly.any():
        return 0
    decision.kept[newly] = False
    decision.rule_id[newly] = rule.rule_id
    if verdict.reasons is not None:
        decision.reason[newly] = verdict.reasons[newly]
    codes = verdict.codes
    decision.reason_code[newly] = codes[newly] if isinstance(codes, np.ndarray) else codes
    if verdict.duplicate_of is not None:
        decision.duplicate_of[newly] = verdict.duplicate_of[newly]
    declared = set(rule.codes)
    used = set(decision.reason_code[newly].tolist())
    if not used <= declared:
        raise AssertionError(f"rule {rule.rule_name} wrote undeclared codes {used - declared}")
    return int(newly.sum())


def _check_code(rule: Rule, verdict: Verdict) -> None:
    if verdict.code is not None and verdict.code not in rule.codes:
        raise AssertionError(f"rule {rule.rule_name} gave undeclared outcome {verdict.code!r}")
