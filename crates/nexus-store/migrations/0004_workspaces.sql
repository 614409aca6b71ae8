-- 0004_workspaces: persistent workspaces, their snapshots, and which ones sandboxes mount.
--
-- A workspace's tree has a generation (1 at creation, larger after each restore), changed
-- only by compare-and-set. owner_sandbox_id is the sandbox a workspace was made for
-- implicitly (no foreign key: the workspace is recorded before its sandbox, and may
-- outlive it). labels is a JSON object. Times are Unix milliseconds.

CREATE TABLE workspaces (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL UNIQUE,
    generation       INTEGER NOT NULL CHECK (generation >= 1),
    quota_mib        INTEGER CHECK (quota_mib >= 1),
    labels           TEXT NOT NULL,
    owner_sandbox_id TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

-- Snapshot names (tags) are unique per workspace; the UNIQUE index also serves
-- "every snapshot of a workspace". Rows are deleted together with their workspace.
CREATE TABLE snapshots (
    id           TEXT PRIMARY KEY NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    generation   INTEGER NOT NULL CHECK (generation >= 1),
    size_bytes   INTEGER CHECK (size_bytes >= 0),
    created_at   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
) STRICT;

-- A sandbox's read-write /workspace; NULL for sandboxes recorded before this migration,
-- which keep their private directory. mounts is a JSON array of
-- {"workspace": "ws-...", "path": "/mnt/data", "read_only": true}.
ALTER TABLE sandboxes ADD COLUMN workspace_id TEXT REFERENCES workspaces (id);
ALTER TABLE sandboxes ADD COLUMN mounts TEXT NOT NULL DEFAULT '[]';

CREATE INDEX sandboxes_by_workspace ON sandboxes (workspace_id)
    WHERE workspace_id IS NOT NULL;
