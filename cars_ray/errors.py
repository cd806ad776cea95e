"""User-facing errors: each carries one sentence that names the file, line or field at fault."""


class CarsRayError(Exception):
    """An error the user can fix; pipelines print its message alone, without a traceback."""


class ConfigError(CarsRayError):
    """A configuration file, key or value is wrong."""


class DataError(CarsRayError):
    """A dataset folder, annotation file or split file is missing or malformed."""


class CheckpointError(CarsRayError):
    """A checkpoint is missing, unreadable or does not fit the data it is used with."""


class ImageError(CarsRayError):
    """One image cannot be used; the message is the reason recorded in reports."""


class BoxError(ImageError):
    """A box given with an image is malformed, inverted, empty or lies wholly outside the image."""


class Interrupted(CarsRayError):
    """The job was stopped (Ctrl-C, job stop) before its end; the message says how to continue."""


class RayStartError(CarsRayError):
    """Ray could not be started or reached (address, temp folder); the message says what to change."""
