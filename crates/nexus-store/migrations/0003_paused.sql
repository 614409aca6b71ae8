-- 0003_paused: sandboxes may be `paused` (every process frozen by the freezer cgroup).
--
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt with the new list of
-- states and every row copied over unchanged.

CREATE TABLE sandboxes_new (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    image        TEXT NOT NULL,
    driver       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN
                     ('created', 'starting', 'running', 'paused', 'stopping', 'stopped',
                      'crashed')),
    crash_reason TEXT,
    env          TEXT NOT NULL,
    labels       TEXT NOT NULL,
    memory_mib   INTEGER,
    cpus         REAL,
    pids         INTEGER,
    tmp_mib      INTEGER,
    ttl_seconds  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    runtime      TEXT
) STRICT;

INSERT INTO sandboxes_new
    SELECT id, name, image, driver, state, crash_reason, env, labels, memory_mib, cpus,
           pids, tmp_mib, ttl_seconds, created_at, updated_at, started_at, runtime
    FROM sandboxes;

DROP TABLE sandboxes;
ALTER TABLE sandboxes_new RENAME TO sandboxes;

CREATE INDEX sandboxes_by_state ON sandboxes (state);
