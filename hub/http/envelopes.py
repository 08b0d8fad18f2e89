"""Seed 003's REST envelopes, and :class:`ApiError`, the error every handler raises.

Every REST answer is an envelope, errors included (401, 403, 404, 405, 422, 500)::

    {"success": true, "data": ..., "message": "...", "timestamp": "...", "request_id": "req_..."}
    {"success": false, "error": {"code": "DEVICE_NOT_FOUND", "message": "...", "details": {}},
     "timestamp": "...", "request_id": "req_..."}
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from xiaozhi.errors import XiaozhiError
from xiaozhi_hub.unit import now_wire

__all__ = [
    "API_PREFIX",
    "ERROR_RESPONSES",
    "MAX_BODY_BYTES",
    "STATUS_CODES",
    "ApiError",
    "ErrorBody",
    "ErrorEnvelope",
    "SuccessEnvelope",
    "error_response",
    "ok",
    "request_id",
]

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
"""Largest request body read (bytes); a larger announced one is answered 413 unread."""

STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
"""The envelope's ``error.code`` for an HTTP error raised by the framework itself."""


class ErrorBody(BaseModel):
    code: str = Field(examples=["DEVICE_NOT_FOUND"])
    message: str = Field(examples=["unknown device 'kitchen'"])
    details: dict[str, Any] = Field(default_factory=dict)


class SuccessEnvelope(BaseModel):
    """Seed 003's "Standard Response Structure"."""

    success: Literal[True] = True
    data: Any = None
    message: str = Field(examples=["OK"])
    timestamp: str = Field(examples=["2024-01-01T00:00:00.000Z"])
    request_id: str = Field(examples=["req_3f2a9c1b7d4e"])


class ErrorEnvelope(BaseModel):
    """Seed 003's "Error Response Structure"."""

    success: Literal[False] = False
    error: ErrorBody
    timestamp: str
    request_id: str


class ApiError(XiaozhiError):
    """An error answered with the error envelope: ``status`` (HTTP) and ``code`` (the
    envelope's ``error.code``) are kept on it, so handlers raise it and one exception handler
    answers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or f"req_{secrets.token_hex(6)}"


def ok(request: Request, data: Any, message: str = "OK", *, status: int = 200) -> JSONResponse:
    body = {
        "success": True,
        "data": data,
        "message": message,
        "timestamp": now_wire(),
        "request_id": request_id(request),
    }
    return JSONResponse(body, status_code=status)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "success": False,
        "error": {"code": code, "message": message, "details": dict(details or {})},
        "timestamp": now_wire(),
        "request_id": request_id(request),
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "No, unknown or expired credentials"},
    403: {"model": ErrorEnvelope, "description": "Valid credentials without the needed role"},
    422: {"model": ErrorEnvelope, "description": "The request does not validate"},
}
