"""The one exception root of coordwatch.

Every error the project raises on purpose derives from :class:`CoordwatchError`, so a
caller (a worker, the CLI) can catch the project's own failures in one place. It lives
in the lowest package so that ``detectors`` and ``streams`` can import it.
"""


class CoordwatchError(Exception):
    """Root of all coordwatch errors."""


class IncompatibleSketchError(CoordwatchError, ValueError):
    """Two sketches (or a sketch and stored bytes) have different parameters."""


class SketchParamError(CoordwatchError, ValueError):
    """A sketch parameter (or an update argument) out of its domain."""


class SketchOverflowError(CoordwatchError, OverflowError):
    """A counter would wrap (raised before the offending counts are added)."""


class SketchFormatError(CoordwatchError, ValueError):
    """Bytes that are not a sketch this version can read."""


class ConfigError(CoordwatchError):
    """Invalid configuration; the message names the key, the value and the fix."""
