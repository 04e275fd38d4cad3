"""The reference central-side consumer of the MQTT contract (``deskwatch-collector``).

- :mod:`.validate`: topic parsing and JSON Schema validation of every payload.
- :mod:`.store`: one storage interface, two backends (SQLite embedded, PostgreSQL).
- :mod:`.ingest`: turns validated messages into rows (de-duplication, seq gaps, evidence checks).
- :mod:`.subscriber`: MQTT 5 shared subscriptions with manual acknowledgements.
- :mod:`.retention`: evidence purge (20 days at most) with a deletion record.
- :mod:`.web`: the supervisor page (login, live violations over server-sent events, fleet view).
"""

from __future__ import annotations

__version__ = "0.2.0"

MAX_RETENTION_DAYS = 20
