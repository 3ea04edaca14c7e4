"""Long-running and scaled-out services built on the scoring runtime (Ray: see
:mod:`soundwatch.services.distributed`)."""
