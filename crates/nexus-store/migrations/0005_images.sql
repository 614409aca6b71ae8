-- 0005_images: images, the read-only root trees sandboxes start from.
--
-- The built-in image `host` has no row. Sandboxes keep naming their image by name in
-- sandboxes.image (no foreign key: `host` has no row); deleting an image is refused while
-- a sandbox names it, and names are unique, so a name always means one image.
-- source_kind is 'imported' (origin = the directory) or 'built' (origin = the base, e.g.
-- 'debian:bookworm'; packages a JSON array of strings; tool e.g. 'mmdebstrap 1.3.5').
-- Times are Unix milliseconds.

CREATE TABLE images (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('imported', 'built')),
    origin      TEXT NOT NULL,
    packages    TEXT NOT NULL DEFAULT '[]',
    tool        TEXT NOT NULL DEFAULT '',
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX sandboxes_by_image ON sandboxes (image);
