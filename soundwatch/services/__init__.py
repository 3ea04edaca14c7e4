"""Long-running and scaled-out services on top of the scoring runtime: the folder and
stream monitor, the HTTP server with its dashboard, and scoring and training on Ray
(:mod:`soundwatch.services.distributed`).

Each service scores through :class:`soundwatch.runtime.ScoringRuntime`; the monitor and
the server keep their results in :class:`soundwatch.store.EventStore`.
"""
