"""Every error modelyard raises, with the HTTP status and OpenAI error type it maps to.

The tree (status in brackets)::

    ModelyardError [500, server_error]
    ├── ConfigError [500]                      a config file or value is wrong; carries the YAML path
    ├── InvalidRequestError [400]              the client's request is malformed or invalid
    │   ├── ContextLengthExceededError [400]   code=context_length_exceeded
    │   └── ContentPolicyError [400]           code=content_policy_violation
    ├── AuthenticationError [401]
    ├── PaymentRequiredError [402]
    │   └── MaxCostExceededError [402]         no candidate fits the request's max_cost_usd
    ├── PermissionDeniedError [403]
    ├── NotFoundError [404]                    unknown model, route or provider
    ├── PayloadTooLargeError [413]
    ├── RateLimitError [429]                   carries retry_after (seconds)
    │   └── BudgetExceededError [429]          a budget would be passed; names it and when it resets
    ├── ModelBusyError [409]                   unload asked for a local model in use
    ├── ClientClosedError [499]                the client left before its answer started (recorded only)
    ├── CredentialDecryptionError [500]        a stored credential cannot be decrypted
    │   └── WrongMasterKeyError [500]          ... because the master key is not the one used
    ├── ServiceUnavailableError [503]          nothing can serve the request right now
    │   └── StateUnavailableError [503]        the shared-state store (Redis) is unreachable
    ├── StartupError [500]                     the gateway cannot start (a port in use, a database away);
    │                                          carries the exit code (modelyard.startup)
    ├── AllAttemptsFailedError [502/503/504]   every candidate failed; lists each attempt
    └── UpstreamError [502]                    one upstream attempt failed
        ├── UpstreamStatusError [502]          the upstream answered with an error status
        ├── UpstreamConnectionError [502]      connect failure, reset, closed mid-response
        ├── UpstreamTimeoutError [504]         connect, first-token, stall or total timeout
        ├── UpstreamMalformedError [502]       the upstream sent something we cannot parse
        └── UpstreamValidationError [502]      the answer failed the route's output validators

Every message passes through :func:`modelyard.scrub.scrub` when the error is built, so no
configured secret or key-shaped string reaches a body, a record or a log.  Errors become
OpenAI-style JSON in exactly one place: ``ModelyardError.to_openai()``, used by
``modelyard.server.errors``.  Messages never contain secrets: adapters build them from upstream
error bodies, never from request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from modelyard.scrub import scrub

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "AllAttemptsFailedError",
    "AuthenticationError",
    "BudgetExceededError",
    "ClientClosedError",
    "ConfigError",
    "ConfigRejectedError",
    "ConflictError",
    "ContentPolicyError",
    "ContextLengthExceededError",
    "CredentialDecryptionError",
    "InvalidRequestError",
    "MaxCostExceededError",
    "MethodNotAllowedError",
    "ModelBusyError",
    "ModelyardError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "PreconditionRequiredError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StartupError",
    "StateUnavailableError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamMalformedError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
    "UpstreamValidationError",
    "WrongMasterKeyError",
]


class ModelyardError(Exception):
    """Root of every modelyard error."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        message = scrub(message)  # no secret survives into a body, a record or a log (modelyard.scrub)
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    @property
    def status(self) -> int:
        return self.status_code

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error (for example ``Retry-After``)."""
        return {}

    def to_openai(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(ModelyardError):
    """The configuration is invalid. ``path`` is the YAML path of the offending key."""

    default_code = "config_error"

    def __init__(self, message: str, *, path: str = "", source: str | None = None) -> None:
        where = f"{path}: " if path else ""
        origin = f"{source}: " if source else ""
        super().__init__(f"{origin}{where}{message}")
        self.path = path
        self.reason = message
        self.source = source


class InvalidRequestError(ModelyardError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class ContentPolicyError(InvalidRequestError):
    default_code = "content_policy_violation"


class AuthenticationError(ModelyardError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PaymentRequiredError(ModelyardError):
    status_code = 402
    error_type = "insufficient_quota"
    default_code = "budget_exceeded"


class PermissionDeniedError(ModelyardError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(ModelyardError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class PayloadTooLargeError(ModelyardError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(ModelyardError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after + 0.499)))}


class ServiceUnavailableError(ModelyardError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"


class UpstreamError(ModelyardError):
    """One attempt at an upstream provider failed.

    ``retryable`` says whether trying again (on the same model, after a pause) may succeed.
    """

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"
    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.provider = provider
        self.model = model
        if retryable is not None:
            self.retryable = retryable

    @property
    def kind(self) -> str:
        """A short, stable name of the failure class (used in attempt records)."""
        return type(self).__name__.removeprefix("Upstream").removesuffix("Error").lower() or "upstream"


#: Upstream statuses that are worth another try: overload, rate limit, transient server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


_NAMED_REASONS = frozenset(
    {"model_not_found", "load_failed", "out_of_memory", "context_length_exceeded", "content_policy_violation"}
)


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error status (or an in-band error)."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        provider: str = "",
        model: str = "",
        code: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            model=model,
            code=code,
            retryable=upstream_status in RETRYABLE_STATUSES,
        )
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.param = param

    @property
    def status(self) -> int:
        # What the client sees when this is the final error: the upstream's own 4xx status for
        # request problems (bad parameters, unknown upstream model), 502 for everything else.
        # A 401/403 from the upstream is modelyard's credential problem, not the client's.
        if self.upstream_status in (400, 404, 413, 422):
            return self.upstream_status
        if self.upstream_status == 429:
            return 429
        if self.upstream_status in (503, 529):
            return 503
        if self.upstream_status == 504:
            return 504
        return 502

    @property
    def kind(self) -> str:
        # a named reason says more than a status (fallback reasons: not installed, load failed, ...)
        if self.code in _NAMED_REASONS:
            return str(self.code)
        return f"status_{self.upstream_status}"

    def headers(self) -> dict[str, str]:
        # the upstream's own Retry-After, passed on for the statuses a client retries (429, 503, 529)
        if self.upstream_status in (429, 503, 529) and self.retry_after is not None:
            return {"Retry-After": str(max(1, round(self.retry_after + 0.499)))}
        return {}

    def to_openai(self) -> dict[str, Any]:
        body = super().to_openai()
        if self.upstream_status == 429:
            body["error"]["type"] = "rate_limit_error"
        elif self.upstream_status in (400, 404, 413, 422):
            body["error"]["type"] = "invalid_request_error"
        return body


class UpstreamConnectionError(UpstreamError):
    default_code = "upstream_connection_error"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        phase: str = "total",
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.phase = phase

    @property
    def kind(self) -> str:
        return f"timeout_{self.phase}"


class UpstreamMalformedError(UpstreamError):
    default_code = "upstream_malformed_response"


class UpstreamValidationError(UpstreamError):
    """The upstream answered, but the answer failed an output validator (the next model is tried)."""

    default_code = "invalid_output"
    retryable = False

    @property
    def kind(self) -> str:
        return "validation"


class AllAttemptsFailedError(ModelyardError):
    """Every candidate of a route failed. Lists each attempt (model, error class, status), no secrets.

    The status is 504 when the last failure was a timeout, 503 when nothing could be tried or
    every model was overloaded / rate limited, else 502.
    """

    error_type = "upstream_error"
    default_code = "all_attempts_failed"

    def __init__(
        self,
        message: str,
        *,
        attempts: list[dict[str, Any]],
        last: ModelyardError | None,
        records: list[Any] | None = None,
        rate_limited: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code="rate_limit_exceeded" if rate_limited else None)
        self.attempts = attempts
        self.last = last
        #: the router's full attempt records (for in-process callers)
        self.records = records or []
        #: every candidate was refused for rate limits: 429, not a server error (contracts: status codes)
        self.rate_limited = rate_limited
        #: when a candidate frees: the earliest upstream Retry-After, or the shortest breaker cooldown
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        if self.rate_limited:
            return 429
        last = self.last
        if isinstance(last, UpstreamTimeoutError):
            return 504
        if last is None or isinstance(last, RateLimitError | ServiceUnavailableError):
            return 503
        if isinstance(last, UpstreamStatusError) and last.upstream_status in (429, 503, 529):
            return 503
        return 502

    def headers(self) -> dict[str, str]:
        if self.status not in (429, 503):
            return {}
        if self.retry_after is not None:
            return {"Retry-After": str(max(1, round(self.retry_after + 0.499)))}
        return self.last.headers() if self.last is not None else {}

    def to_openai(self) -> dict[str, Any]:
        body = super().to_openai()
        body["error"]["attempts"] = self.attempts
        if self.rate_limited:
            body["error"]["type"] = "rate_limit_error"  # what the SDKs map to RateLimitError
        return body


# -- raised by one layer each, kept here so the whole tree is in one place --------------------


class MaxCostExceededError(PaymentRequiredError):
    """No candidate's estimate fits the request's ``max_cost_usd`` (402)."""

    default_code = "max_cost_exceeded"


class BudgetExceededError(RateLimitError):
    """A budget would be passed (429). Names the budget, its limit and when it resets."""

    default_code = "budget_exceeded"

    def __init__(self, message: str, *, budget: str, scope: str, resets_at: datetime | None, retry_after: float | None):
        super().__init__(message, retry_after=retry_after)
        self.budget = budget
        self.scope = scope
        self.resets_at = resets_at


class CredentialDecryptionError(ModelyardError):
    """A stored credential could not be decrypted (wrong master key, or the value was altered)."""

    default_code = "credential_decryption_failed"


class WrongMasterKeyError(CredentialDecryptionError):
    """The master key is not the one the stored credentials were encrypted with."""

    default_code = "wrong_master_key"


class StateUnavailableError(ServiceUnavailableError):
    """The shared-state store (Redis) cannot be reached or answered with an error."""

    default_code = "state_unavailable"


class ClientClosedError(ModelyardError):
    """The client left before its answer started; the work was cancelled (recorded, never sent)."""

    status_code = 499
    error_type = "client_closed"
    default_code = "client_closed"


class ModelBusyError(ModelyardError):
    """An unload was asked for a model that requests are using or waiting for."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "model_in_use"


class ConflictError(ModelyardError):
    """The change conflicts with the current state: a stale revision, something still in use (409)."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PreconditionRequiredError(ModelyardError):
    """A config write without the revision it was based on (428)."""

    status_code = 428
    error_type = "invalid_request_error"
    default_code = "precondition_required"


class MethodNotAllowedError(ModelyardError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ConfigRejectedError(ModelyardError):
    """A config change sent through the admin API does not validate (422, ``param`` is the YAML path)."""

    status_code = 422
    error_type = "invalid_request_error"
    default_code = "invalid_config"

    @classmethod
    def of(cls, exc: ConfigError) -> ConfigRejectedError:
        return cls(exc.reason, param=exc.path or None)


class StartupError(ModelyardError):
    """The gateway cannot start for an operator's reason: a port in use, a database that cannot be
    reached or created.  ``message`` says what failed and what to do (never a password),
    ``exit_code`` is the exit status of ``modelyard serve``; :mod:`modelyard.startup` makes them."""

    default_code = "startup_error"

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
