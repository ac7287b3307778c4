"""Every user-facing failure is an EdgekitError; the CLI turns it into one line and exit code 2."""
from typing import Optional


class EdgekitError(Exception):
    """A failure caused by what the user gave us; its message names what was received and allowed."""


class ConfigError(EdgekitError):
    """A target profile, option or setting is invalid."""


class DataError(EdgekitError):
    """Calibration or input data is missing, malformed or does not fit the model."""


class ModelError(EdgekitError):
    """A model file is missing, corrupt, or has a structure edgekit cannot convert."""


class BundleError(EdgekitError):
    """A bundle is missing files, has altered files, or an unknown manifest schema."""


def first_line(exc: object, limit: Optional[int] = None, default: Optional[str] = None) -> str:
    """The first line of what an exception (or any message) says, cut to `limit` characters; when it says
    nothing, `default` or the name of its type. Library errors often run to many lines: a one-line error quotes
    this."""
    text = str(exc).strip()
    if not text:
        return default or type(exc).__name__
    return text.splitlines()[0].strip()[:limit]
