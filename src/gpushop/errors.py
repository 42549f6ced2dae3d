"""Typed errors, one root, with the exit code each maps to (DESIGN.md, Contracts).

    GpushopError
    ├── UsageError                 bad input (exit 2)
    ├── ConfigError                bad or missing configuration (exit 2)
    ├── NoMatchError               no offer fits the query (exit 6)
    ├── MoneyLimitError            refused by a price cap or budget (exit 5)
    ├── StoreUnavailable           the store (GPUSHOP_DB_URL) cannot be opened (exit 1)
    └── ProviderError              anything a provider call went wrong with
        ├── ProviderUnavailable    could not talk to it, or it answered 5xx (exit 3)
        │   └── RateLimited        429, still limited after our retries (exit 3)
        │       └── QuotaExceeded  daily search quota: never retried (exit 3)
        ├── AuthFailed             key missing, invalid or not allowed (exit 4)
        ├── NotFound               the instance / resource is not there (exit 1)
        ├── OfferUnavailable       the offer was taken or cannot start (exit 1)
        ├── InsufficientCredit     the account lacks credit (exit 5)
        ├── BadRequest             the provider rejected our request (exit 1)
        └── Unsupported            the provider has no such thing (e.g. bids) (exit 2)

Messages never contain secrets: callers pass only what is safe to show.
"""

from __future__ import annotations


class GpushopError(Exception):
    """Root of every error gpushop raises on purpose."""

    exit_code = 1


class UsageError(GpushopError):
    exit_code = 2


class ConfigError(GpushopError):
    exit_code = 2


class StoreUnavailable(GpushopError):
    """The store's database cannot be reached or opened (the message shows no password)."""


class NoMatchError(GpushopError):
    exit_code = 6


class MoneyLimitError(GpushopError):
    exit_code = 5


class ProviderError(GpushopError):
    """A provider call failed. Carries what a caller needs to decide what to do next."""

    exit_code = 1
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.endpoint = endpoint


class ProviderUnavailable(ProviderError):
    exit_code = 3
    retryable = True


class RateLimited(ProviderUnavailable):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    retryable = False


class AuthFailed(ProviderError):
    exit_code = 4


class NotFound(ProviderError):
    pass


class OfferUnavailable(ProviderError):
    pass


class InsufficientCredit(ProviderError):
    exit_code = 5


class BadRequest(ProviderError):
    pass


class Unsupported(ProviderError):
    """The provider has no such operation (TensorDock has no bids): asking is bad usage."""

    exit_code = 2
