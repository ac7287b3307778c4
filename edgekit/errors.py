"""Every user-facing failure is an EdgekitError; the CLI turns it into one line and exit code 2."""


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
