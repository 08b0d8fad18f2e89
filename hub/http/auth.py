"""REST authentication: who is calling (:class:`Principal`) and what they may do.

``X-API-Key`` (keys and roles from ``XIAOZHI_API_KEYS``) or ``Authorization: Bearer <JWT>``
(HS256, issued by ``POST /api/v1/auth/token`` in exchange for an API key). The app's
middleware authenticates every ``/api/v1/`` request before its body is looked at (no or bad
credentials: 401); the route dependencies :data:`Reader` and :data:`Writer` then check the
role (a read-only credential on a command endpoint: 403).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from xiaozhi_hub.http.envelopes import ApiError
from xiaozhi_hub.settings import ApiRole, HubSettings

__all__ = ["Authenticator", "Principal", "Reader", "Writer", "requires"]

_JWT_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``subject`` names the key by fingerprint, never the key itself."""

    subject: str
    role: ApiRole
    via: Literal["api_key", "jwt"]

    def allows(self, role: ApiRole) -> bool:
        return self.role is ApiRole.WRITE or role is ApiRole.READ


def _fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class Authenticator:
    """Checks ``X-API-Key`` and bearer JWTs; issues JWTs.

    Raises :class:`~xiaozhi_hub.http.envelopes.ApiError` (401) for missing or bad credentials;
    jwt's own errors are translated here, at the boundary.
    """

    def __init__(self, settings: HubSettings, jwt_key: bytes) -> None:
        self.keys = settings.api_key_roles
        self.jwt_key = jwt_key
        self.ttl = settings.jwt_ttl_seconds
        self.issuer = settings.jwt_issuer

    def authenticate(self, api_key: str | None, authorization: str | None) -> Principal:
        challenge = {"WWW-Authenticate": 'Bearer realm="xiaozhi-hub"'}
        if api_key is not None:
            key = api_key.strip()
            for known, role in self.keys.items():
                if secrets.compare_digest(known.encode(), key.encode()):
                    return Principal(_fingerprint(known), role, "api_key")
            raise ApiError(401, "INVALID_API_KEY", "unknown API key", headers=challenge)
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(
                    401,
                    "INVALID_TOKEN",
                    "expected 'Authorization: Bearer <JWT>'",
                    headers=challenge,
                )
            return self._decode(token.strip(), challenge)
        raise ApiError(
            401,
            "MISSING_CREDENTIALS",
            "send an 'X-API-Key' header or 'Authorization: Bearer <JWT>'",
            headers=challenge,
        )

    def _decode(self, token: str, challenge: dict[str, str]) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.jwt_key,
                algorithms=[_JWT_ALGORITHM],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
            role = ApiRole(str(claims.get("role")))
        except jwt.ExpiredSignatureError as err:
            raise ApiError(401, "TOKEN_EXPIRED", "the JWT has expired", headers=challenge) from err
        except (jwt.InvalidTokenError, ValueError) as err:
            raise ApiError(401, "INVALID_TOKEN", f"invalid JWT: {err}", headers=challenge) from err
        return Principal(str(claims["sub"]), role, "jwt")

    def issue(self, principal: Principal, ttl: int | None) -> tuple[str, int]:
        lifetime = min(ttl or self.ttl, self.ttl)
        now = int(time.time())
        claims = {
            "sub": principal.subject,
            "role": principal.role.value,
            "iss": self.issuer,
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode(claims, self.jwt_key, algorithm=_JWT_ALGORITHM), lifetime


# Declared for OpenAPI (the "Authorize" button); the middleware does the checking.
_api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT")


def requires(role: ApiRole) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        _key: Annotated[str | None, Security(_api_key_scheme)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
    ) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:  # pragma: no cover - the middleware always sets it
            raise ApiError(401, "MISSING_CREDENTIALS", "not authenticated")
        if not principal.allows(role):
            raise ApiError(
                403,
                "FORBIDDEN",
                f"this credential is {principal.role.value}-only; this needs {role.value}",
                {"role": principal.role.value, "required": role.value},
            )
        return principal

    return dependency


Reader = Annotated[Principal, Depends(requires(ApiRole.READ))]
Writer = Annotated[Principal, Depends(requires(ApiRole.WRITE))]
