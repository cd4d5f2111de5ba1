"""Prometheus metrics of one app, in its own CollectorRegistry.

Query latency is a histogram observed per request. Everything else (reloads, sync
failures, lag, vectors, refused commits) is read from the services at scrape time by a
custom collector, so the library keeps plain counters and never imports prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from kbgit.serving.service import ServiceRegistry

#: query latency buckets in seconds: 21.7 ms is a typical 100k-vector query on 2 cores
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceCollector(Collector):
    """Exports the state of every hosted store, labelled by store name."""

    def __init__(self, services: ServiceRegistry) -> None:
        self.services = services

    def collect(self) -> Iterator[object]:
        """Yield one metric family per figure, one sample per store."""
        labels = ["store"]
        fams = {
            "ready": GaugeMetricFamily(
                "kbgit_ready", "1 when the store can answer queries", labels=labels
            ),
            "vectors": GaugeMetricFamily(
                "kbgit_vectors", "Live vectors in the served snapshot", labels=labels
            ),
            "lag_s": GaugeMetricFamily(
                "kbgit_lag_seconds", "Staleness of the served commit vs the hub", labels=labels
            ),
            "lag_c": GaugeMetricFamily(
                "kbgit_lag_commits", "Hub commits not yet served", labels=labels
            ),
            "commit_ts": GaugeMetricFamily(
                "kbgit_head_commit_timestamp_seconds",
                "Commit time of the served commit",
                labels=labels,
            ),
            "reloads": CounterMetricFamily("kbgit_reloads", "Snapshots swapped in", labels=labels),
            "reload_s": SummaryMetricFamily(
                "kbgit_reload_seconds", "Time to verify, load and swap a commit", labels=labels
            ),
            "sync_fail": CounterMetricFamily(
                "kbgit_sync_failures", "Failed, refused or diverged sync attempts", labels=labels
            ),
            "refused": CounterMetricFamily(
                "kbgit_refused_commits", "Commits refused by verification", labels=labels
            ),
            "ann_segments": GaugeMetricFamily(
                "kbgit_ann_segments",
                "Segments of the served snapshot searched through a local ANN index",
                labels=labels,
            ),
            "ann_events": CounterMetricFamily(
                "kbgit_ann_cache",
                "ANN indexes built here, read from the local cache, or refused there "
                "(checksum or content mismatch: deleted and rebuilt)",
                labels=[*labels, "event"],
            ),
            "eval_recall": GaugeMetricFamily(
                "kbgit_eval_recall",
                "Recall@k of the served commit's own evals/ questions",
                labels=[*labels, "mode", "k"],
            ),
            "eval_mrr": GaugeMetricFamily(
                "kbgit_eval_mrr",
                "MRR@10 of the served commit's own evals/ questions",
                labels=[*labels, "mode"],
            ),
        }
        for svc in self.services.services():
            cur, st, name = svc.current, svc.sync, [svc.name]
            fams["ready"].add_metric(name, 1.0 if cur else 0.0)
            fams["vectors"].add_metric(name, cur.snapshot.vectors if cur else 0)
            fams["lag_s"].add_metric(name, svc.lag_seconds())
            fams["lag_c"].add_metric(name, st.lag_commits)
            fams["commit_ts"].add_metric(name, cur.snapshot.commit_time if cur else 0)
            fams["reloads"].add_metric(name, svc.reloads)
            fams["reload_s"].add_metric(name, count_value=svc.reloads, sum_value=svc.reload_seconds)
            fams["sync_fail"].add_metric(name, st.sync_failures)
            fams["refused"].add_metric(name, st.refused_total)
            fams["ann_segments"].add_metric(name, cur.snapshot.index.approximate if cur else 0)
            ann = svc.ann
            for event, count in (
                ("built", ann.built),
                ("loaded", ann.loaded),
                ("refused", ann.refused),
            ):
                fams["ann_events"].add_metric([svc.name, event], count)
            scored = svc.eval_score
            if cur is not None and scored is not None and scored[0] == cur.snapshot.commit:
                sc = scored[1]
                fams["eval_recall"].add_metric([svc.name, sc.mode, str(sc.k)], sc.recall)
                fams["eval_mrr"].add_metric([svc.name, sc.mode], sc.mrr)
        yield from fams.values()


class AppMetrics:
    """The metrics of one app: request-side instruments plus the service collector."""

    def __init__(self, services: ServiceRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.query_seconds = Histogram(
            "kbgit_query_seconds",
            "HTTP /query latency (parse, encode, search, render)",
            ["store"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "kbgit_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.registry.register(ServiceCollector(services))
