"""The base of every contract model, and the one timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """camelCase on the wire (Kubernetes style), snake_case in Python; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


def now_rfc3339(now: datetime | None = None) -> str:
    """A Kubernetes timestamp (RFC 3339, UTC, whole seconds)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
