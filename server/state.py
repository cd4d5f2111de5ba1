"""What an app holds (services, followers, config, metrics) and the API's error types."""

from __future__ import annotations

import dataclasses
from typing import Any

from kbgit.config import ServeConfig
from kbgit.serving.follower import Follower
from kbgit.serving.service import ServiceRegistry

from .metrics import AppMetrics


@dataclasses.dataclass
class AppState:
    """Everything the blueprint needs, kept in ``app.extensions['kbgit']``."""

    services: ServiceRegistry
    config: ServeConfig
    metrics: AppMetrics
    #: followers by store name; a store without one is reloaded only by /admin/reload
    followers: dict[str, Follower] = dataclasses.field(default_factory=dict)


class ApiError(Exception):
    """An error the API reports as JSON with an HTTP status."""

    status = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        """Return the JSON body of the error response."""
        return {"error": str(self), **self.extra}


class BadRequest(ApiError):
    """A malformed request (400)."""

    status = 400


class Unauthorized(ApiError):
    """A missing or wrong bearer token on an admin endpoint (401)."""

    status = 401


class NotFound(ApiError):
    """An unknown store or path (404)."""

    status = 404
