"""The one exception family for what users can cause.

A ``UserError`` carries the short message shown to the person who sent the command; adapters
render it as-is. Anything that is not a ``UserError`` is a bug: it is logged with context and
the user sees a generic apology.
"""

from __future__ import annotations

__all__ = [
    "GouacheError",
    "UserError",
    "InvalidRequest",
    "RateLimited",
    "QueueFull",
    "QueuePaused",
    "NotAllowed",
    "NotFound",
    "TooLarge",
    "ResourceExhausted",
    "ModelUnavailable",
    "BadUpload",
    "CompileError",
]


class GouacheError(Exception):
    """Base of every error gouache raises on purpose."""


class UserError(GouacheError):
    """An error the user caused and can fix; ``message`` is shown to them verbatim."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(UserError):
    """A command, option or upload that does not parse or is out of range."""


class RateLimited(UserError):
    """The user sent too much too fast; ``retry_after`` seconds until a token is free."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(UserError):
    """The user's own pending cap or the global queue cap is reached."""


class QueuePaused(QueueFull):
    """An admin paused the queue: nothing new is accepted until they resume it."""


class NotAllowed(UserError):
    """The channel, workspace or prompt is not allowed here."""


class NotFound(UserError):
    """A job, model or artifact the user named does not exist."""


class BadUpload(InvalidRequest):
    """An uploaded file that cannot be used as it is: damaged, of the wrong kind, or empty of
    anything to follow (a flat depth map). The message names what is wrong and what to send."""


class TooLarge(UserError):
    """An upload or output exceeds a byte or pixel limit."""


class ResourceExhausted(UserError):
    """The GPU ran out of memory even for a single image."""


class ModelUnavailable(UserError):
    """A configured model that cannot be loaded (missing file, wrong format, out of memory):
    the message names the model and the cause; the job fails, the worker goes on."""


class CompileError(GouacheError, ValueError):
    """``speed.compile = "on"`` cannot work here or failed at warm-up: the operator's problem,
    not a user's; the worker (and ``gouache generate``) refuses to start with this message."""
