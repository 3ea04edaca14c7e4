"""Long-running services on top of the scoring runtime: the folder and stream monitor,
the HTTP server with its dashboard.

Each service scores through :class:`soundwatch.runtime.ScoringRuntime` and keeps its
results in :class:`soundwatch.store.EventStore`.
"""
