"""Rows of the durable queue as frozen values: jobs, artifacts and their states."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gouache.request import Request

__all__ = ["JobStatus", "Job", "Artifact", "ArtifactKind", "TERMINAL", "verdict_artifact",
           "flagged_names"]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # killed its worker max_attempts times


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.DEAD})


class ArtifactKind(StrEnum):
    IMAGE = "image"
    GIF = "gif"
    DEPTH = "depth"
    REPORT = "report"
    INPUT = "input"  # an upload that came with the request (depth map, photo)
    MODERATION = "moderation"  # the worker's safety verdicts; never shown to users


@dataclass(frozen=True)
class Job:
    id: str
    request: Request
    status: JobStatus
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_until: datetime | None = None
    worker_id: str | None = None
    progress: float = 0.0  # 0..1
    error: str | None = None  # the user-facing message for failed/dead/cancelled
    cancel_requested: bool = False

    @property
    def user(self) -> str:
        return self.request.origin.user

    @property
    def images(self) -> int:
        return self.request.images

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Artifact:
    job_id: str
    name: str  # unique per job: "image-0.png", "denoise-0.gif", "report.json"
    kind: ArtifactKind
    mime: str
    data: bytes
    index: int | None = None  # which generated image it shows (images, GIFs, depth maps)

    @property
    def size(self) -> int:
        return len(self.data)


def verdict_artifact(job_id: str, flagged: Sequence[str]) -> Artifact:
    """The worker's record of which artifacts its safety classifier flagged (never shown)."""
    data = json.dumps({"flagged": sorted(flagged)}).encode()
    return Artifact(job_id, "moderation.json", ArtifactKind.MODERATION, "application/json", data)


def flagged_names(artifacts: Sequence[Artifact]) -> set[str]:
    """The names the verdict artifacts among ``artifacts`` flag."""
    flagged: set[str] = set()
    for artifact in artifacts:
        if artifact.kind is ArtifactKind.MODERATION:
            flagged |= set(json.loads(artifact.data).get("flagged", []))
    return flagged
