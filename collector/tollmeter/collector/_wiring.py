"""Builds the ledger, the pipeline and the usage routes from a :class:`Config`.

The one place where configuration keys meet the constructors of the ledger and
pipeline, so that those stay free of configuration parsing.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from tollmeter.collector._avoided_api import avoided_routes
from tollmeter.collector._config import Config
from tollmeter.collector._extract import Extractor
from tollmeter.collector._outcomes_api import outcome_routes
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._retention import ledger_options
from tollmeter.collector._usage_api import usage_routes
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage import Ledger, open_ledger

__all__ = ["build_pipeline", "open_configured_ledger", "usage_api_routes"]


def open_configured_ledger(config: Config) -> Ledger:
    """Open the configured ledger, creating the data directory for the default one."""
    if config.storage.url is None:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    return open_ledger(
        config.storage_url,
        dedupe_window_s=config.ingest.dedupe_window,
        **ledger_options(config.storage.retention),
    )


def build_pipeline(config: Config, ledger: Ledger, pricer: Pricer) -> Pipeline:
    ingest = config.ingest
    extractor = Extractor(
        tenant_attributes=ingest.tenant_attributes,
        default_tenant=ingest.default_tenant,
        collector_id=config.collector_id,
        organisations=config.organisations,
        internal_environments=ingest.internal_environments,
        # Priced as they are extracted, so that each event is built once.
        pricer=pricer,
    )
    return Pipeline(
        ledger=ledger,
        extractor=extractor,
        max_pending_spans=ingest.max_pending_spans,
        commit_interval_s=ingest.commit_interval,
    )


def usage_api_routes(config: Config, ledger: Ledger, pipeline: Pipeline) -> list[BaseRoute]:
    org_of = config.organisations.org_of_tenant
    return [
        *usage_routes(ledger, pipeline.meters, org_of=org_of),
        *outcome_routes(ledger),
        *avoided_routes(ledger),
    ]
