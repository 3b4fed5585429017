"""The errors recon_fast raises for a user's mistake, all under one base class.

Every user-facing mistake (a bad argument, config key, file, flag or device) raises a subclass of
:class:`ReconFastError` whose message names the argument, file, key or flag. ``recon-fast`` prints
such an error as one line (``recon-fast <command>: error: <message>``) and exits with status 2;
anything else is a bug and keeps its traceback.

``ReconFastError`` derives from ``ValueError`` so that ``except ValueError`` written against older
versions keeps working; the *NotFound* classes also derive from ``FileNotFoundError`` for the
same reason. This module imports nothing, so every layer can use it.
"""

from __future__ import annotations

import os

__all__ = [
    "ReconFastError", "InputError", "ConfigError", "ConfigNotFoundError",
    "DeviceError", "NotCompiledError",
    "DataError", "DatasetNotFoundError", "DatasetFileError",
    "CheckpointError", "CheckpointNotFoundError",
    "TeacherWeightsError", "TeacherWeightsNotFoundError", "MissingPackageError",
]


class ReconFastError(ValueError):
    """A mistake in what the user asked for; the message says which argument, file or flag."""


class InputError(ReconFastError):
    """An argument of a public function or a command-line flag is unusable (shape, dtype,
    range, format)."""


class ConfigError(ReconFastError):
    """A config file or override that cannot be used (unknown key, bad value, missing file)."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """A config file does not exist."""


class DeviceError(ReconFastError):
    """The requested device is not there (``--device cuda`` on a machine without a GPU)."""


class NotCompiledError(DeviceError):
    """Tensors on a device the compiled extension has no kernels for (a CPU-only build given CUDA
    tensors)."""


class DataError(ReconFastError):
    """A dataset cannot be read as asked."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset file or folder does not exist."""


class DatasetFileError(DataError):
    """A dataset file exists but cannot be used (corrupt, wrong format or wrong array shape)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # DataLoader workers pickle exceptions: rebuild from both arguments
        return type(self), (self.path, self.problem)


class CheckpointError(ReconFastError):
    """A checkpoint file exists but is not one recon_fast can use here."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path does not exist or is not a file."""


class TeacherWeightsError(ReconFastError):
    """Teacher weights were found but cannot be used (unreadable file, wrong keys or shapes)."""


class TeacherWeightsNotFoundError(TeacherWeightsError, FileNotFoundError):
    """No teacher weights file was given or found in the local caches."""


class MissingPackageError(ReconFastError, ImportError):
    """An optional package that a command needs is not installed (the message names it and how
    to install it)."""
