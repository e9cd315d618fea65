"""Domain errors raised by the pipeline and its backends; the HTTP layer maps them to responses.

    AFTError
     ├── InvalidRequest            the request cannot be served as asked (names `param`)
     │    └── ContextLengthExceeded  a prompt plus its completion do not fit the model
     ├── Overloaded                too much work in flight; retry later
     └── BackendError              the engine or an upstream failed
          ├── EngineDead           the in-process engine died; the process must be restarted
          ├── UpstreamUnavailable  an upstream could not be reached or answered 5xx
          ├── UpstreamRateLimited  an upstream answered 429
          └── UpstreamTimeout      an upstream took longer than allowed

`message` is what the client reads; `detail` (internal URLs, exception text) is for the logs only.
"""

from __future__ import annotations


class AFTError(Exception):
    """Base of every error the service reports to a client."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.detail = detail
        """What the operator needs to know (never sent to the client): internal URLs, the cause."""


class InvalidRequest(AFTError):
    pass


class ContextLengthExceeded(InvalidRequest):
    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class Overloaded(AFTError):
    pass


class BackendError(AFTError):
    pass


class EngineDead(BackendError):
    pass


class UpstreamUnavailable(BackendError):
    pass


class UpstreamRateLimited(BackendError):
    pass


class UpstreamTimeout(BackendError):
    pass
