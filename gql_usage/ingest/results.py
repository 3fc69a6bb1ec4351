"""The answer to an ingested batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Most rejections listed with their reason in one answer (every rejected position is
#: listed in ``rejectedIndexes`` whatever their number).
MAX_LISTED_REJECTIONS = 100


@dataclass
class Rejection:
    index: int
    reason: str


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``rejected``: the first ``MAX_LISTED_REJECTIONS`` rejections (lowest positions)
        with their reasons. When anything was rejected, also ``rejectedCount`` (all of
        them) and ``rejectedIndexes`` (every rejected position), so that a producer can
        always tell which events to fix: every other event of the batch is stored
        (accepted now, or a duplicate of a stored one)."""
        ordered = sorted(self.rejected, key=lambda r: r.index)
        answer: dict[str, Any] = {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"index": r.index, "reason": r.reason}
                         for r in ordered[:MAX_LISTED_REJECTIONS]],
        }
        if ordered:
            answer["rejectedCount"] = len(ordered)
            answer["rejectedIndexes"] = [r.index for r in ordered]
        return answer
