-- The catalog's tables: runs and their members, OBs with their pin and
-- selection, contents (stored bytes, shared by images of the same hash) with
-- their footprint index, images and their run associations, upload leases,
-- tombstones, and the usage counter.

CREATE TABLE runs (
    run_id      text PRIMARY KEY,
    owner_id    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- access(U, R): one row per (user, run) for the PI and every Phase 2 delegate.
CREATE TABLE run_members (
    user_id   text NOT NULL,
    run_id    text NOT NULL REFERENCES runs ON DELETE CASCADE,
    is_owner  boolean NOT NULL,
    PRIMARY KEY (user_id, run_id)
);
CREATE INDEX run_members_run ON run_members (run_id);

-- Generations make object keys unique per upload of the same bytes.
CREATE SEQUENCE content_generation;

CREATE TABLE contents (
    content_id    bigserial PRIMARY KEY,
    fits_hash     text NOT NULL UNIQUE,
    generation    bigint NOT NULL,
    prefix        text NOT NULL UNIQUE,
    fits_key      text NOT NULL,
    preview_key   text NOT NULL,
    hips_prefix   text NOT NULL,
    hips_order    integer NOT NULL,
    cut_low       double precision NOT NULL,
    cut_high      double precision NOT NULL,
    stored_bytes  bigint NOT NULL CHECK (stored_bytes >= 0),
    image_count   integer NOT NULL DEFAULT 0 CHECK (image_count >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Latest use of any image sharing the content (upload, select, display).
    last_used_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contents_last_used ON contents (last_used_at, content_id);

-- One row per displayable HDU. cells: the HEALPix cells (NUNIQ, orders 0..10)
-- covering the footprint, for a GIN lookup of the target's cell and its
-- ancestors; xyz: the corners as unit vectors for the exact test.
CREATE TABLE footprints (
    content_id          bigint NOT NULL REFERENCES contents ON DELETE CASCADE,
    hdu                 integer NOT NULL,
    corners             double precision[] NOT NULL,
    xyz                 double precision[] NOT NULL,
    pixel_scale_arcsec  double precision NOT NULL,
    cells               bigint[] NOT NULL,
    PRIMARY KEY (content_id, hdu)
);
CREATE INDEX footprints_cells ON footprints USING gin (cells);

CREATE TABLE images (
    image_id      bigserial PRIMARY KEY,
    owner_id      text NOT NULL,
    fits_hash     text NOT NULL,
    content_id    bigint NOT NULL REFERENCES contents,
    file_name     text NOT NULL,
    filter        text NOT NULL,
    object_name   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, fits_hash)
);
CREATE INDEX images_content ON images (content_id);
CREATE INDEX images_hash ON images (fits_hash);

-- A(I): the runs an image is associated with.
CREATE TABLE image_runs (
    image_id  bigint NOT NULL REFERENCES images ON DELETE CASCADE,
    run_id    text NOT NULL,
    PRIMARY KEY (image_id, run_id)
);

-- An OB, pinned to its run the first time it is seen, and its selection
-- (kind: SelectionKind numbers; image_id set for a user image).
CREATE TABLE obs (
    ob_id         bigint PRIMARY KEY,
    run_id        text NOT NULL,
    sel_kind      smallint NOT NULL DEFAULT 1,
    sel_value     text NOT NULL DEFAULT '',
    sel_image_id  bigint REFERENCES images,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((sel_kind = 5) = (sel_image_id IS NOT NULL))
);
CREATE INDEX obs_sel_image ON obs (sel_image_id) WHERE sel_image_id IS NOT NULL;

-- A live upload: covers prefix against the sweep and, when it reuses a
-- stored content, keeps that content from being removed under it.
CREATE TABLE upload_leases (
    lease_id    uuid PRIMARY KEY,
    fits_hash   text NOT NULL,
    owner_id    text NOT NULL,
    ob_id       bigint NOT NULL,
    run_id      text NOT NULL,
    generation  bigint NOT NULL,
    prefix      text NOT NULL,
    -- Set when the upload reuses a stored content (REUSE_CONTENT).
    reuse       boolean NOT NULL,
    content_id  bigint REFERENCES contents ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX upload_leases_content ON upload_leases (content_id) WHERE content_id IS NOT NULL;
CREATE INDEX upload_leases_expiry ON upload_leases (expires_at);
CREATE INDEX upload_leases_prefix ON upload_leases (prefix);

-- What is left to say about a removed image (reason: RemovalReason numbers).
CREATE TABLE tombstones (
    tombstone_id  bigserial PRIMARY KEY,
    owner_id      text NOT NULL,
    fits_hash     text NOT NULL,
    file_name     text NOT NULL,
    run_ids       text[] NOT NULL DEFAULT '{}',
    removed_at    timestamptz NOT NULL DEFAULT now(),
    reason        smallint NOT NULL
);
CREATE INDEX tombstones_owner ON tombstones (owner_id, removed_at DESC);
CREATE INDEX tombstones_hash ON tombstones (fits_hash);

-- Exact usage, kept in the transactions that add or remove contents.
CREATE TABLE usage (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    used_bytes     bigint NOT NULL DEFAULT 0,
    content_count  bigint NOT NULL DEFAULT 0,
    image_count    bigint NOT NULL DEFAULT 0
);
INSERT INTO usage DEFAULT VALUES;

-- Whether the spherical polygon with corners xyz (unit vectors, x0,y0,z0,
-- x1,...) holds the unit vector p: the winding number of the polygon
-- around p, from the signed angles its edges subtend at p (great-circle
-- edges, any orientation, concave too, no projection). The winding number
-- around p and around its antipode are the same, so p must also lie in the
-- hemisphere of the corners' mean: footprints are smaller than a hemisphere.
CREATE FUNCTION footprint_holds(xyz double precision[], px double precision,
                                py double precision, pz double precision)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    n integer := array_length(xyz, 1) / 3;
    total double precision := 0;
    a1 double precision; a2 double precision; a3 double precision;
    b1 double precision; b2 double precision; b3 double precision;
    ap double precision; bp double precision;
    side double precision := 0;
    i integer;
    j integer;
BEGIN
    IF n IS NULL OR n < 3 THEN
        RETURN false;
    END IF;
    FOR i IN 0 .. n - 1 LOOP
        j := (i + 1) % n;
        a1 := xyz[3 * i + 1]; a2 := xyz[3 * i + 2]; a3 := xyz[3 * i + 3];
        b1 := xyz[3 * j + 1]; b2 := xyz[3 * j + 2]; b3 := xyz[3 * j + 3];
        ap := a1 * px + a2 * py + a3 * pz;
        bp := b1 * px + b2 * py + b3 * pz;
        side := side + ap;
        total := total + atan2(
            px * (a2 * b3 - a3 * b2) + py * (a3 * b1 - a1 * b3) + pz * (a1 * b2 - a2 * b1),
            (a1 * b1 + a2 * b2 + a3 * b3) - ap * bp);
    END LOOP;
    RETURN side > 0 AND abs(total) > pi();
END
$$;
