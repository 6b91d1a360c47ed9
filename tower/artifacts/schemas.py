"""What the artifacts routes answer, and the summary a job record carries."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Artifact(BaseModel):
    """A file the job created or changed under /workspace: its path there, its size,
    its permission bits and the SHA-256 of its bytes (as tower stored them)."""

    path: str
    size: int
    mode: int
    sha256: str


class OmittedArtifact(BaseModel):
    """A changed path that was not kept, and why (over MAX_ARTIFACT_BYTES, a link...)."""

    path: str
    size: int
    why: str


class Changes(BaseModel):
    """A repository job's diff against the commit it started from, as git counts it."""

    files: int
    insertions: int
    deletions: int


class ArtifactsSummary(BaseModel):
    """What the job left, in its record: how many files were kept and their bytes, what
    was left out (at most 1000 listed; `omitted_count` counts them all), how many paths it
    deleted, and why there is no diff when one was expected."""

    files: int = 0
    bytes: int = 0
    omitted: list[OmittedArtifact] = Field(default_factory=list)
    omitted_count: int = 0
    deleted_count: int = 0
    diff_size: int | None = None
    diff_error: str | None = None


class ArtifactList(BaseModel):
    job_id: str
    files: list[Artifact]
    omitted: list[OmittedArtifact]
    omitted_count: int
    deleted: list[str]
    deleted_count: int
    changes: Changes | None
    diff_size: int | None
    diff_error: str | None
