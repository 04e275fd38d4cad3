-- the central database after a newer collector (schema 5) that only added
-- made by make_fixtures.py; do not edit by hand
ALTER TABLE events ADD COLUMN received_via TEXT;
UPDATE meta SET value = '5' WHERE key = 'schema_version';
INSERT INTO meta (key, value) VALUES ('compatible_from', '1') ON CONFLICT (key) DO UPDATE SET value = excluded.value;
