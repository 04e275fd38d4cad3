-- the central database after a newer collector older ones must not use
-- made by make_fixtures.py; do not edit by hand
ALTER TABLE events ADD COLUMN received_via TEXT;
UPDATE meta SET value = '5' WHERE key = 'schema_version';
INSERT INTO meta (key, value) VALUES ('compatible_from', '5') ON CONFLICT (key) DO UPDATE SET value = excluded.value;
