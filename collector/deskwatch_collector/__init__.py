"""The reference central-side consumer of the MQTT contract (``deskwatch-collector``).

- :mod:`.validate`: topic parsing and JSON Schema validation of every payload.
- :mod:`.store`: one storage interface, two backends (SQLite embedded, PostgreSQL).
- :mod:`.ingest`: turns validated messages into rows (de-duplication, seq gaps, evidence checks).
- :mod:`.subscriber`: MQTT 5 shared subscriptions with manual acknowledgements.
- :mod:`.retention`: evidence purge (20 days at most) with a deletion record.
- :mod:`.web`: the web server (sign-in, limits and headers every route shares, ``/healthz``).
- :mod:`.console`: the supervisor console and the worker's page on it (every route that shows data).
"""

from __future__ import annotations

__version__ = "0.2.0"

MAX_RETENTION_DAYS = 20
