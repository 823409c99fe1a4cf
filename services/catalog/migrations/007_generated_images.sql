-- System-owned images the suite makes or fetches (the Gaia image of an OB's field, ESO
-- archive images):
-- owned by "system:<source>", one per source key (what the image is made from),
-- associated with the runs of the OBs they were made for, never tombstoned.
ALTER TABLE images ADD COLUMN source_key text;
CREATE UNIQUE INDEX images_source_key ON images (source_key) WHERE source_key IS NOT NULL;

-- An OB showing a Gaia image (kind 2) or an archive image (kind 4) names the image it
-- shows, when it is stored; once culled, the OB keeps its kind and the image is made
-- or fetched again.
ALTER TABLE obs DROP CONSTRAINT obs_check;
ALTER TABLE obs ADD CONSTRAINT obs_selected_image
    CHECK ((sel_kind <> 5 OR sel_image_id IS NOT NULL) AND (sel_kind IN (2, 4, 5) OR sel_image_id IS NULL));
