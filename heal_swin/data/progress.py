"""Progress bars that suit where the output goes.

On a terminal tqdm redraws one line with carriage returns; in a log file or a pipe every redraw
stays, and a run's log fills with `\\r` and escape codes. `progress_options()` gives the tqdm
keyword arguments for both: a live bar on a terminal, none elsewhere (the callers print their own
summary line: images written, metrics per step).
"""

from __future__ import annotations

import sys

__all__ = ["progress_options"]


def progress_options(enabled: bool = True, stream=None) -> dict:
    """tqdm(..., **progress_options(enabled)): the bar writes to `stream` (default sys.stderr) and
    is shown only when `enabled` and `stream` is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        live = bool(enabled) and callable(isatty) and bool(isatty())
    except (OSError, ValueError):  # a closed or detached stream
        live = False
    return {"file": stream, "disable": not live}
