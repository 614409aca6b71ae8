-- 0001_init: the `meta` table, key/value facts about the database itself.
--
-- Migrations run inside a transaction that the runner opens; do not write
-- BEGIN or COMMIT here. Never edit a migration once released: add a new one.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- When the database was first created, in Unix milliseconds.
INSERT INTO meta (key, value)
VALUES ('created_at', CAST(CAST(unixepoch('subsec') * 1000 AS INTEGER) AS TEXT));
