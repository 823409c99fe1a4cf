"""The row every benchmark section reports, and the table they print."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Row:
    section: str
    case: str  # what was measured, e.g. "4096x4096 TAN, order 11"
    ours: float  # our figure (seconds, MB, ms ...)
    reference: float | None  # the reference tool's figure in the same run, if any
    unit: str  # "s", "MB", "ms", "MB/s"
    reference_name: str = ""  # e.g. "Hipsgen", "astropy full read"
    goal: str = ""  # e.g. "ratio <= 0.1"
    met: bool | None = None  # whether the goal is met; None when there is none
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.reference in (None, 0):
            return None
        return self.ours / self.reference  # type: ignore[operator]


def print_table(rows: list[Row]) -> None:
    header = ["section", "case", "ours", "reference", "ratio", "goal", "met", "note"]
    lines = [header]
    for r in rows:
        ref = "" if r.reference is None else f"{r.reference:.4g} {r.unit} ({r.reference_name})"
        ratio = "" if r.ratio is None else f"{r.ratio:.4g}"
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append([r.section, r.case, f"{r.ours:.4g} {r.unit}", ref, ratio, r.goal, met, r.note])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
