"""The one exception the client raises, carrying the gateway's problem+json."""

from __future__ import annotations

from typing import Any


class BgImagesError(Exception):
    """A request the gateway refused (or could not be reached for).

    `code` is the gateway's stable code (TARGET_OUTSIDE_FIELD, NOT_FOUND,
    TOO_LARGE, ...), `status` the HTTP status (0 when no answer came),
    `detail` the message for people, `errors` the per-HDU findings of a
    refused file.
    """

    def __init__(
        self,
        status: int,
        method: str,
        url: str,
        code: str,
        detail: str,
        *,
        title: str = "",
        errors: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, method, url, code, detail)
        self.status = status
        self.method = method
        self.url = url
        self.code = code
        self.detail = detail
        self.title = title
        self.errors = errors or []
        self.body = body or {}

    def __str__(self) -> str:
        return f"{self.code} ({self.status}) {self.method} {self.url}: {self.detail}"
