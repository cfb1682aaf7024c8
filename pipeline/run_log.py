"""The libraries' own logging during a pipeline run goes to a file under the output dir, not the terminal.

TFX, Beam, absl and TensorFlow log thousands of INFO lines and some WARNING/ERROR ones a user cannot act on
(a first run's empty resolver, an execution id); the terminal keeps the progress lines and the outcome, and
the file keeps everything for a bug report. `-v` also shows the libraries' records on the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Tuple

LOG_DIR = "logs"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that write to the terminal themselves: the root (Beam and TFX call logging.basicConfig) and TensorFlow's.
_TERMINAL_LOGGERS = ("", "tensorflow")


def log_path(output_dir: str, name: str) -> str:
    """OUTPUT_DIR/logs/NAME-<UTC time>.log; a local temp dir when the output dir is remote (gs://, s3://)."""
    directory = os.path.join(output_dir, LOG_DIR) if "://" not in output_dir else tempfile.gettempdir()
    return os.path.join(directory, f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log")


def _is_terminal(handler: logging.Handler) -> bool:
    """A handler writing to a stream (stderr): logging's StreamHandler, or absl's handler once absl installed it."""
    if type(handler).__name__ == "ABSLHandler":
        return True
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextlib.contextmanager
def library_log(path: str, verbose: bool = False) -> Iterator[str]:
    """Within the block, every library record (INFO and up from absl/TFX, WARNING and up from the rest, Python
    warnings) is appended to `path`; without `verbose` none reaches the terminal, nor anything written to the
    process's stderr (descriptor 2). Restored on exit."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    detached: List[Tuple[logging.Logger, logging.Handler]] = []
    if not verbose:
        for name in _TERMINAL_LOGGERS:
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if _is_terminal(h)]:
                logger.removeHandler(handler)
                detached.append((logger, handler))
    root = logging.getLogger()
    root.addHandler(file_handler)
    logging.captureWarnings(True)
    saved_stderr = None if verbose else _redirect_stderr(file_handler.stream.fileno())
    try:
        yield path
    finally:
        if saved_stderr is not None:
            _restore_stderr(saved_stderr)
        logging.captureWarnings(False)
        root.removeHandler(file_handler)
        file_handler.close()
        for logger, handler in detached:
            logger.addHandler(handler)


def _redirect_stderr(fd: int) -> Optional[int]:
    """Points file descriptor 2 at `fd` (the log, opened for appending): what C++ code and Beam's worker processes
    (which inherit it) write there lands in the log too. Returns the saved descriptor, or None when stderr has none."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return None
    os.dup2(fd, 2)
    return saved


def _restore_stderr(saved: int) -> None:
    try:
        sys.stderr.flush()
    except ValueError:
        pass
    os.dup2(saved, 2)
    os.close(saved)
