"""Shared entry-point plumbing for the scripts in pipelines/: exit codes and error reporting."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence

from cars_ray.errors import CarsRayError, ConfigError, Interrupted

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 the job ran but failed (e.g. a quality check did not hold); "
    "2 bad input (configuration, data layout, annotation file, checkpoint), reported in one "
    "sentence; 130 interrupted."
)


def make_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser whose --help ends with the documented exit codes."""
    return argparse.ArgumentParser(
        description=description,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def check_number(value: float, flag: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A numeric option must be finite and within its bounds; fails in one sentence naming the flag."""
    if not math.isfinite(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = " and ".join(part for part in (f">= {minimum:g}" if minimum is not None else "",
                                                  f"<= {maximum:g}" if maximum is not None else "") if part)
        raise ConfigError(f"{flag} must be a finite number{' ' + bounds if bounds else ''}, got {value}")
    return value


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run a pipeline's main(), turning user errors into one line on stderr and an exit code."""
    try:
        code = main(argv)
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except CarsRayError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code)
