"""Log capture for the card-data tests: the gateway's real logging configuration, writing to the
test's captured stderr, plus a record of every event before redaction."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from paygate.platform.logging import configure_logging


def _uncache_loggers() -> None:
    """structlog loggers keep the configuration (and the stderr) of their first use: forget it,
    so that they pick up the one in force now."""
    for name, module in list(sys.modules.items()):
        if name.startswith(("paygate", "tests")):
            for value in list(vars(module).values()):
                if isinstance(value, structlog._config.BoundLoggerLazyProxy):
                    vars(value).pop("bind", None)


class _Records(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.sink.append(f"{record.name}: {text}")


@dataclass
class Logs:
    """What the gateway logged: `raw` holds every event as the code emitted it (structlog event
    dicts and standard-library messages, before any redaction); `output()` the bytes written."""

    capsys: pytest.CaptureFixture[str]
    raw: list[str] = field(default_factory=list)
    written: str = ""

    def start(self) -> None:
        """Configure logging as `paygate serve` does (JSON lines on stderr), at debug level so
        that every line of the gateway's own is seen. Called in the test itself: only there is
        `sys.stderr` the capture that `output()` reads."""
        _uncache_loggers()
        configure_logging("json", "debug")

        def record(_logger: Any, _method: str, event: Any) -> Any:
            self.raw.append(repr(dict(event)))
            return event

        structlog.configure(processors=[record, *structlog.get_config()["processors"]])
        logging.getLogger().addHandler(_Records(self.raw))

    def output(self) -> str:
        captured = self.capsys.readouterr()
        self.written += captured.err + captured.out
        return self.written


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Logs]:
    """See `Logs.start`. Everything it changes is put back afterwards, so that no later test
    writes to this test's closed capture: stop whatever logs before this fixture ends."""
    config = structlog.get_config()
    root = logging.getLogger()
    # pytest puts its own capture handlers on the root logger for each phase of a test and takes
    # them off itself: only the others are put back.
    kept = [h for h in root.handlers if not type(h).__module__.startswith("_pytest")]
    level = root.level
    try:
        yield Logs(capsys)
    finally:
        structlog.configure(**config)
        for handler in root.handlers[:]:
            if not type(handler).__module__.startswith("_pytest"):
                root.removeHandler(handler)
        for handler in kept:
            root.addHandler(handler)
        root.setLevel(level)
        _uncache_loggers()
