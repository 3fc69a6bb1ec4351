"""The answer to an ingested batch: counts, and each rejected event with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Most rejections listed with their reason in one answer (every rejected position is
#: listed in ``rejectedIndexes`` whatever their number).
MAX_LISTED_REJECTIONS = 100


@dataclass
class Rejection:
    """An event not stored: its position in the batch (from 0) and why."""

    index: int
    reason: str


@dataclass
class IngestResult:
    """Events stored now, duplicates of stored ones, and rejections (in any order)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The answer body: the first ``MAX_LISTED_REJECTIONS`` rejections (lowest
        positions) and, when any, ``rejectedCount`` and every ``rejectedIndexes``.
        See README, "Bounded batches"."""
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
