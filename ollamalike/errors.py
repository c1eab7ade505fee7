"""Exceptions that carry an HTTP status, a user-facing message and an optional hint."""


class OllamaError(Exception):
    """Base error: `status` is the HTTP status the daemon answers with."""

    status = 500

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadRequest(OllamaError):
    status = 400


class Forbidden(OllamaError):
    status = 403


class NotFound(OllamaError):
    status = 404


class PreconditionFailed(OllamaError):
    status = 412


class TooLarge(OllamaError):
    status = 413


class Canceled(OllamaError):
    status = 499


class ServiceUnavailable(OllamaError):
    status = 503


class RunnerError(OllamaError):
    """A runner process failed (crash, load failure); the message carries its own last words."""

    status = 500


def model_not_found(name: str) -> NotFound:
    return NotFound(f"model '{name}' not found, try pulling it first")
