-- 0002_sandboxes: one row per sandbox, from create to delete.
--
-- env and labels are JSON objects; runtime is the driver's opaque JSON handle (pids,
-- uid, cgroup, socket path) that lets a restarted daemon find the sandbox again.
-- Times are Unix milliseconds.

CREATE TABLE sandboxes (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    image        TEXT NOT NULL,
    driver       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN
                     ('created', 'starting', 'running', 'stopping', 'stopped', 'crashed')),
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

CREATE INDEX sandboxes_by_state ON sandboxes (state);
