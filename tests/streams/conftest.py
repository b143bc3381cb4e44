"""The embedded broker, one per test module (real Tansu on a free 127.0.0.1 port)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(0, log_file=tmp_path_factory.mktemp("broker") / "tansu.log").start()
    try:
        yield b
    finally:
        b.stop()
