"""The ledger's invariants, as named checks with a verdict each: what ``payplane ledger verify`` prints.

The checks themselves run as SQL against live data (``payplane.adapters.ledger_verify``); this module
holds the report and its rendering, so the rules read in one place.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckResult:
    name: str
    description: str
    violations: list[str] = field(default_factory=list)  # a few examples, each a readable line
    violation_count: int = 0

    @property
    def passed(self) -> bool:
        return self.violation_count == 0


@dataclass(frozen=True)
class VerifyReport:
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def render(self) -> str:
        lines = []
        for check in self.checks:
            verdict = "ok  " if check.passed else "FAIL"
            lines.append(f"{verdict} {check.name}: {check.description}")
            if not check.passed:
                lines.append(f"     {check.violation_count} violation(s), e.g.:")
                lines.extend(f"       - {v}" for v in check.violations)
        lines.append("ledger invariants hold" if self.passed else "LEDGER INVARIANTS VIOLATED")
        return "\n".join(lines)
