"""The set of forwarding exporters of a collector, fed through the receivers' signal sink."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from tollmeter.collector.forward._config import SIGNAL_NAMES, ForwardConfig, Signal, SignalSink
from tollmeter.collector.forward._exporter import ExporterStats, ForwardExporter
from tollmeter.collector.forward._transport import make_transport

__all__ = ["Forwarder", "chain_sinks", "start_forwarding"]

logger = logging.getLogger(__name__)


class Forwarder:
    """Fans every received request out to the exporters that take its signal."""

    def __init__(self, config: ForwardConfig) -> None:
        self.exporters = [
            ForwardExporter(exporter, make_transport(exporter)) for exporter in config.exporters
        ]
        self._routes: dict[Signal, list[ForwardExporter]] = {
            signal: [e for e in self.exporters if signal in e.config.signals]
            for signal in SIGNAL_NAMES
        }
        self._started = False

    def start(self) -> None:
        if self._started:
            raise RuntimeError("the forwarder is already started")
        self._started = True
        for exporter in self.exporters:
            exporter.start()

    def offer(self, signal: Signal, body: bytes) -> None:
        """A :data:`SignalSink`: queue ``body`` on every exporter of ``signal``."""
        for exporter in self._routes[signal]:
            exporter.offer(signal, body)

    def stats(self) -> dict[str, ExporterStats]:
        return {exporter.name: exporter.stats() for exporter in self.exporters}

    def close(self, deadline: float) -> None:
        """Stop taking requests; keep sending until ``deadline`` (``time.monotonic()``)."""
        for exporter in self.exporters:
            exporter.close(deadline)

    def shutdown(self, timeout_s: float) -> None:
        """Flush every exporter within one shared ``timeout_s`` (or the earlier deadline
        given to :meth:`close`), then drop and count what is left; idempotent."""
        deadline = time.monotonic() + timeout_s
        # Closing all first lets them flush in parallel; each then joins in turn.
        self.close(deadline)
        for exporter in self.exporters:
            exporter.shutdown(max(0.0, deadline - time.monotonic()))


def start_forwarding(config: ForwardConfig) -> Forwarder | None:
    """Start the configured exporters; ``None`` when nothing is configured.

    Pass :meth:`Forwarder.offer` to the receivers as (part of) their signal sink, and
    :meth:`Forwarder.shutdown` the forwarder once the receivers have stopped.
    """
    if not config.exporters:
        return None
    forwarder = Forwarder(config)
    forwarder.start()
    for exporter in config.exporters:
        logger.info(
            "forwarding %s to %s (%s)",
            ", ".join(exporter.signals),
            exporter.endpoint,
            exporter.name,
        )
    return forwarder


def chain_sinks(*sinks: SignalSink | None) -> SignalSink | None:
    """One sink calling each given sink in turn (``None`` when none is given)."""
    present: Sequence[SignalSink] = [sink for sink in sinks if sink is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def sink(signal: Signal, body: bytes) -> None:
        for each in present:
            each(signal, body)

    return sink
