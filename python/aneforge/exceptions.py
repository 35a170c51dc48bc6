"""The ANEForge exception hierarchy.

Every error ANEForge raises on purpose derives from :class:`AneForgeError`.
Classes that describe a bad argument also derive from the matching builtin
(``ValueError`` / ``TypeError``), so ``except ValueError`` keeps working.
"""


class AneForgeError(Exception):
    """Base class of every ANEForge error."""


class ShapeError(AneForgeError, ValueError):
    """Shapes do not fit the op: the message names the op, the shapes and the
    file:line of the user code that built the tensor."""


class DTypeError(AneForgeError, TypeError):
    """A dtype the op or port does not accept."""


class UnsupportedOpError(AneForgeError, ValueError):
    """An op (or op form) the engine or importer does not support."""


class TargetError(AneForgeError, ValueError):
    """An unknown target name, or a graph the target cannot compile."""


class CompileError(AneForgeError):
    """Compilation failed."""


class CompileBackoffError(CompileError):
    """A compile was attempted while the compile breaker is open
    (``ANEFORGE_COMPILE_BREAKER_STRICT=1``)."""


class BackendUnavailableError(AneForgeError):
    """The requested backend cannot run on this host (e.g. ``ane`` off macOS)."""


class ResourceError(AneForgeError, MemoryError):
    """A request that would exhaust host memory, refused before allocating."""


class FileFormatError(AneForgeError, ValueError):
    """A file that is missing, corrupt or of an unsupported kind."""


__all__ = [
    "AneForgeError",
    "ShapeError",
    "DTypeError",
    "UnsupportedOpError",
    "TargetError",
    "CompileError",
    "CompileBackoffError",
    "BackendUnavailableError",
    "ResourceError",
    "FileFormatError",
]
