"""One small exception tree. Foreign errors are wrapped ``raise X(...) from ex``.

Each class carries the process exit code the CLI maps it to (README: exit codes).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3
EXIT_ENVIRONMENT = 4
EXIT_INTERRUPTED = 130


class FacecutError(Exception):
    """Base of every error facecut raises on purpose."""

    exit_code = EXIT_USAGE


class ConfigError(FacecutError):
    """Bad option values or an unusable work folder (exit 2, as every FacecutError)."""


class ModelError(FacecutError):
    """Model files missing/incomplete or a model that cannot be loaded."""

    exit_code = EXIT_ENVIRONMENT


class ProviderUnavailable(ModelError):
    """The onnxruntime execution provider asked for is not usable here (exit 4)."""


class EnvironmentProblem(FacecutError):
    """Broken installation (e.g. two onnxruntime flavours), no shared memory, ..."""

    exit_code = EXIT_ENVIRONMENT


class LogCorruption(FacecutError):
    """An append-only log is damaged somewhere other than its (truncatable) tail."""

    exit_code = EXIT_ENVIRONMENT
