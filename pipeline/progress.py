"""One line per component as the LocalDagRunner starts and finishes it; TFX's INFO flood goes elsewhere (run_log)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Dict, Iterator, Optional, TextIO, Tuple

from absl import logging as absl_logging

_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."


class ComponentProgress(logging.Filter):
    """Prints the runner's component start/finish records as they pass; lets every record through to the handlers."""

    def __init__(self, total: int, stream: TextIO):
        super().__init__()
        self._total, self._stream = total, stream
        self._started: Dict[str, float] = {}
        self.windows: Dict[str, Tuple[float, float]] = {}  # component -> (start, end), time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _RUNNING:
            self._started[record.args[0]] = time.monotonic()
            print(f"[{len(self._started)}/{self._total}] {record.args[0]} ...", file=self._stream, flush=True)
        if record.msg == _FINISHED:
            end = time.monotonic()
            start = self._started.get(record.args[0], end)
            self.windows[record.args[0]] = (start, end)
            elapsed = end - start
            print(f"      {record.args[0]} done in {elapsed:.1f} s", file=self._stream, flush=True)
        return True


@contextlib.contextmanager
def component_progress(total: int, stream: Optional[TextIO] = None) -> Iterator[ComponentProgress]:
    stream = stream or sys.stdout  # looked up per call: the process's stdout may be replaced (tests capture it)
    # Through absl's verbosity, not Logger.setLevel: code inside the run saves and restores the
    # verbosity flag, which would otherwise silently reset the level mid-run.
    logger = logging.getLogger("absl")
    progress = ComponentProgress(total, stream)
    verbosity = absl_logging.get_verbosity()
    logger.addFilter(progress)
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        yield progress
    finally:
        logger.removeFilter(progress)
        absl_logging.set_verbosity(verbosity)
