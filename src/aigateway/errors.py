"""The gateway's exception tree, and the one place that knows how each maps to HTTP.

    GatewayError                      every error a caller may see; has status, type, code
    ├── InvalidRequest                400 malformed JSON, bad UTF-8, schema errors
    │   └── UnsupportedMediaType      415 a body that is not JSON
    ├── PayloadTooLarge               413 body over server.max_body_bytes
    ├── AuthenticationFailed          401 missing, unknown, expired or disabled key (one body)
    ├── PermissionDenied              403 the key may not use this model / endpoint
    ├── NotFound                      404 unknown model or path
    ├── RateLimited                   429 a gateway rate or concurrency limit; retry-after
    ├── BudgetExceeded                429 insufficient_quota: a budget cannot pay; do not retry
    ├── LimitsUnavailable             503 limit state unreachable and configured to fail closed
    └── UpstreamError                 the provider failed (status chosen by the subclass)
        ├── UpstreamConnectError      502 could not connect / connection reset before the response
        ├── UpstreamTimeout           504 no response (or no next chunk) in time
        ├── UpstreamStatusError       the provider answered non-2xx; maps its status
        └── UpstreamProtocolError     502 the provider answered something we cannot parse

    ConfigError                       not a request error: a bad gateway.yaml (names YAML paths)

Messages never contain secrets: upstream bodies are passed through only for the
statuses where they describe the caller's own mistake, and only after redaction.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    #: whether trying the same request again (or on another target) may succeed
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @property
    def error_class(self) -> str:
        """A short stable name for logs and metrics."""
        return type(self).__name__


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class GuardrailBlocked(InvalidRequest):
    """A guardrail's ``block`` rule matched the request (the message names the rule)."""

    code = "guardrail_blocked"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self) -> None:
        # One message for every cause: callers must not learn which keys exist.
        super().__init__(
            "Invalid API key. Pass a gateway key as 'Authorization: Bearer <key>' or 'x-api-key'."
        )


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class BudgetExceeded(GatewayError):
    """A budget cannot pay for the request: retrying will not help until the window
    resets or the budget is raised (``x-should-retry: false``)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class LimitsUnavailable(GatewayError):
    """The shared limit state could not be reached and the config says fail closed."""

    status = 503
    type = "server_error"
    code = "limits_unavailable"
    retryable = True


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code: str | None = "upstream_error"


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    retryable = True


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"
    retryable = True


#: upstream statuses whose body describes the caller's own mistake: passed through
CLIENT_FAULT_STATUSES = frozenset({400, 404, 409, 413, 415, 422})
#: upstream statuses where another attempt or target may succeed
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class UpstreamStatusError(UpstreamError):
    """The provider answered with a non-2xx status.

    ``upstream_status`` is what the provider said; ``status`` is what the caller gets:
    the same for the caller's own mistakes and for 429, 502 for provider-side
    failures (including a provider rejecting *our* credentials), so the caller's SDK
    retries exactly when retrying can help.
    """

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        upstream_type: str | None = None,
        upstream_code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.upstream_status = upstream_status
        self.retryable = upstream_status in RETRYABLE_STATUSES
        if upstream_status in CLIENT_FAULT_STATUSES or upstream_status == 429:
            self.status = upstream_status
            self.type = upstream_type or (
                "rate_limit_error" if upstream_status == 429 else "invalid_request_error"
            )
            code = upstream_code
        elif upstream_status in (401, 403):
            self.status = 502
            code = "upstream_auth_error"
            message = "The provider rejected the gateway's credentials for this target."
        else:
            self.status = 502
            code = upstream_code or "upstream_error"
        super().__init__(message, param=param, headers=headers)
        self.code = code


class ConfigError(Exception):
    """gateway.yaml is invalid. ``problems`` are 'yaml.path (line N): message' lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))
