"""Which partitions need a run, as Dagster judges it: the stale status the UI shows.

A partition is stale when its asset's code version changed since it was materialised (the
fingerprint of the code it runs and the deployment's default settings) or when an upstream
partition now has another data version (a new checkpoint checksum, other prompts or another
registry entry); missing when Dagster has never materialised it. The runner launches those,
as the UI's "Materialize stale and missing" would.

Dagster exposes this resolver only in its internal modules; they are pinned by the lock.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime


class Staleness:
    """A snapshot of the instance's stale status; take a new one after upstream runs."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions):
        graph = defs.resolve_asset_graph()
        view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                              instance=instance, asset_graph=graph)
        self._resolver = CachingStaleStatusResolver(instance, graph, view)

    def why_stale(self, asset: str, partition_key: str) -> str | None:
        """Why Dagster would rematerialise the partition, or None when it is fresh."""
        key = dg.AssetKey(asset)
        status = self._resolver.get_status(key, partition_key)
        if status == StaleStatus.MISSING:
            return "never materialised"
        if status == StaleStatus.STALE:
            causes = self._resolver.get_stale_causes(key, partition_key)
            return "; ".join(sorted({_describe(cause) for cause in causes})) or "stale"
        return None


def _describe(cause) -> str:
    if cause.dependency is None:
        return cause.reason
    return f"{cause.reason} ({cause.dependency.asset_key.to_user_string()})"
