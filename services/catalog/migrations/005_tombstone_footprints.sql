-- Where a removed image lay (its footprints, as the cells and unit vectors the
-- compatibility test reads), so that the selector shows an owner the tombstone
-- of an image only for OBs that image would fit.
CREATE TABLE tombstone_footprints (
    tombstone_id  bigint NOT NULL REFERENCES tombstones ON DELETE CASCADE,
    hdu           integer NOT NULL,
    xyz           double precision[] NOT NULL,
    cells         bigint[] NOT NULL,
    PRIMARY KEY (tombstone_id, hdu)
);
CREATE INDEX tombstone_footprints_cells ON tombstone_footprints USING gin (cells);
