"""Every error is JSON ``{"code", "message"}`` with a stable code (validation errors name the
field), never a traceback: gpushop's typed errors, FastAPI's validation, unknown routes, and
anything unexpected (logged here, a bare "internal_error" for the caller)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gpushop import errors
from gpushop.api.limits import TooManyRequests
from gpushop.service.artifacts import ArchiveError
from gpushop.service.team_rentals import IdempotencyConflict
from gpushop.service.types import DatasetError, UserQuotaExceeded
from gpushop.service.users import Forbidden, Unauthorized
from gpushop.service.webhooks import (
    AddressRefused,
    SecretKeyMissing,
    SecretUnreadable,
    Unresolvable,
)

log = logging.getLogger("gpushop.api")

# (status, code) by error class, most specific first
_BY_CLASS: list[tuple[type[errors.GpushopError], int, str]] = [
    (Unauthorized, 401, "unauthorized"),
    (DatasetError, 422, "bad_dataset"),
    (ArchiveError, 422, "bad_archive"),
    (TooManyRequests, 429, "rate_limited"),
    (Forbidden, 403, "forbidden"),
    (IdempotencyConflict, 409, "idempotency_conflict"),
    (UserQuotaExceeded, 403, "quota_exceeded"),
    (errors.QuotaExceeded, 503, "provider_quota_exceeded"),
    (errors.RateLimited, 503, "provider_rate_limited"),
    (errors.ProviderUnavailable, 502, "provider_unavailable"),
    (errors.AuthFailed, 502, "provider_auth_failed"),
    (errors.InsufficientCredit, 402, "insufficient_credit"),
    (errors.OfferUnavailable, 409, "offer_unavailable"),
    (errors.NotFound, 404, "not_found"),
    (errors.BadRequest, 400, "provider_bad_request"),
    (errors.Unsupported, 400, "unsupported"),
    (errors.StoreUnavailable, 503, "store_unavailable"),
    (errors.MoneyLimitError, 403, "money_limit"),
    (errors.NoMatchError, 404, "no_match"),
    (errors.UsageError, 400, "bad_request"),
    (AddressRefused, 422, "webhook_url_refused"),
    (Unresolvable, 422, "webhook_url_refused"),
    (SecretUnreadable, 500, "secret_unreadable"),
    (SecretKeyMissing, 503, "secret_key_missing"),
    (errors.ConfigError, 500, "config_error"),
]
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error(status: int, code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status)


def status_and_code(exc: errors.GpushopError) -> tuple[int, str]:
    for cls, status, code in _BY_CLASS:
        if isinstance(exc, cls):
            return status, code
    return 500, "error"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.GpushopError)
    async def typed(request: Request, exc: errors.GpushopError) -> JSONResponse:
        status, code = status_and_code(exc)
        if isinstance(exc, DatasetError):  # every bad file, and no server path
            count = len(exc.problems)
            message = (
                f"the dataset has {count} problem{'s' if count != 1 else ''}; nothing was rented"
            )
            return error(status, code, message, problems=exc.problems)
        response = error(status, code, str(exc))
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(where) or "body"
        message = f"{field}: {first.get('msg', 'invalid')}"
        return error(422, "invalid_request", message, field=field)

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        response = error(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal_error", "internal error (logged by the service)")
