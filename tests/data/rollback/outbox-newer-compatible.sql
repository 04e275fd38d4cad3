-- outbox.sqlite3 as a newer version left it: messages.priority, a new table, a new kind; 4 messages + 1 image
-- made by make_fixtures.py; do not edit by hand
BEGIN TRANSACTION;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "counters" VALUES('seq',2);
CREATE TABLE damaged (  -- messages taken out of the queue: their stored content was damaged
    id INTEGER PRIMARY KEY,           -- their id in messages
    found REAL NOT NULL,
    why TEXT NOT NULL,
    kind, topic, payload, qos, created, event_id, props  -- as they were found, whatever their type
);
CREATE TABLE delivery_log (at REAL NOT NULL, what TEXT NOT NULL);
INSERT INTO "delivery_log" VALUES(1800000000.0,'connected');
CREATE TABLE dropped (  -- events and images that left the queue unsent, for 'deskwatch history'
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,                -- "event" or "evidence"
    reason TEXT NOT NULL,              -- the event's evidence_reason words: "evicted", "disk_full"
    at REAL NOT NULL,
    PRIMARY KEY (event_id, kind)
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    topic TEXT NOT NULL,          -- suffix after the device prefix, e.g. "event"
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created REAL NOT NULL,        -- wall-clock seconds (for the age cap)
    bytes INTEGER NOT NULL,
    event_id TEXT,                -- events and evidence: to link them
    offline INTEGER NOT NULL DEFAULT 0,  -- queued while the broker was unreachable
    props TEXT                    -- JSON of MQTT 5 user properties, or NULL
, priority INTEGER NOT NULL DEFAULT 0);
INSERT INTO "messages" VALUES(1,'event',4,'event',X'7B22736368656D61223A226465736B77617463682E6576656E742F31222C226576656E745F6964223A22652D6E657765722D31222C2274797065223A2270686F6E655F757365222C227265706C61796564223A66616C73652C22736571223A317D',1,1800000000.0,97,'e-newer-1',0,NULL,0);
INSERT INTO "messages" VALUES(2,'evidence',0,'evidence/e-newer-1',X'FFD86A7065672D62792D6E65776572FFD9',1,1800000000.0,17,'e-newer-1',0,NULL,0);
INSERT INTO "messages" VALUES(3,'event',4,'event',X'7B22736368656D61223A226465736B77617463682E6576656E742F31222C226576656E745F6964223A22652D6E657765722D32222C2274797065223A2270686F6E655F757365222C227265706C61796564223A66616C73652C22736571223A327D',1,1800000000.0,97,'e-newer-2',0,NULL,0);
INSERT INTO "messages" VALUES(4,'scan',3,'scan',X'7B22736368656D61223A226465736B77617463682E7363616E2F31222C227363616E5F6964223A227363616E2D62792D6E65776572227D',1,1800000000.0,55,NULL,0,NULL,0);
INSERT INTO "messages" VALUES(5,'metrics',1,'metrics',X'7B22736368656D61223A20226465736B77617463682E6D6574726963732F31222C2022637075223A20302E347D',0,1800000000.0,43,NULL,0,NULL,0);
CREATE TABLE store_format (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "store_format" VALUES('compatible_from',1);
CREATE INDEX messages_by_rank ON messages (rank, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('messages',5);
COMMIT;
PRAGMA user_version=2;
