"""Judge: the rules registry, policies (YAML) and the engine that applies them to a scan.

Each built-in rule lives with its config model, logic, docs and reason codes in one module
(:mod:`.checks`, :mod:`.duplicates`, :mod:`.origin`, :mod:`.rights`, :mod:`.human`,
:mod:`.diversity`, :mod:`.reference`, :mod:`.rejected`) and registers itself in
:data:`RULES`. A new rule is one more module that subclasses :class:`Rule` and is decorated
with :func:`register`.
"""

from __future__ import annotations

from datagate.rules import (
    checks,
    diversity,
    duplicates,
    human,
    origin,
    reference,
    rejected,
    rights,
)
from datagate.rules.base import (
    RULES,
    Context,
    Reference,
    RowVectors,
    Rule,
    Verdict,
    register,
    unregister,
)
from datagate.rules.engine import Decision, RuleOutcome, apply_policy
from datagate.rules.policy import Policy, default_rules_path, load_policy, parse_policy

BUILTIN = (checks, duplicates, origin, rights, human, diversity, reference, rejected)

__all__ = [
    "RULES",
    "Context",
    "Decision",
    "Policy",
    "Reference",
    "RowVectors",
    "Rule",
    "RuleOutcome",
    "Verdict",
    "apply_policy",
    "default_rules_path",
    "load_policy",
    "parse_policy",
    "register",
    "unregister",
]
