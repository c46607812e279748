"""Prometheus metrics of a farm.

- ``source``: the one adapter through which metrics read the store;
- ``cells``: the measurement families (latest result of each cell);
- ``fleet``: the farm's counters (moved by the store's state events) and gauges;
- ``power``: live power per monitor, asked of the monitor actors;
- ``exporter``: ``/metrics`` on the head, and the standalone ``farm exporter``;
- ``backfill``: the store's history as OpenMetrics; ``push``: to a pushgateway.

Every collector takes its registry (or is registered on one) as a parameter:
nothing here touches prometheus_client's global ``REGISTRY``.
"""
