"""A/B software updates: signed bundles, the Raspberry Pi's tryboot, commit or roll back.

``slots`` (autoboot.txt, what the firmware booted, the update record), ``bundle`` (the
signed bundle format), ``install`` (write the inactive slot, trial boot, health check).
Runs as root through ``deskwatch update``; the daemon only reads the record.
"""
