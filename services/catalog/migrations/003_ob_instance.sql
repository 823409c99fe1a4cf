-- OBs are keyed by (p2 instance, ob_id): two p2 instances may number their
-- OBs alike. The instance is the namespace prefix of an id (the text before
-- its first ':', empty when there is none); an OB's pinned run carries its
-- instance's prefix, so existing rows take it from their run_id.
CREATE FUNCTION id_instance(id text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT CASE WHEN strpos(id, ':') > 0 THEN split_part(id, ':', 1) ELSE '' END $$;

ALTER TABLE obs ADD COLUMN p2_instance text;
UPDATE obs SET p2_instance = id_instance(run_id);
ALTER TABLE obs ALTER COLUMN p2_instance SET NOT NULL;
ALTER TABLE obs DROP CONSTRAINT obs_pkey;
ALTER TABLE obs ADD CONSTRAINT obs_pkey PRIMARY KEY (p2_instance, ob_id);
ALTER TABLE obs ADD CONSTRAINT obs_run_of_instance CHECK (id_instance(run_id) = p2_instance);

-- upload_leases.ob_id stays bare: a lease is matched on (owner_id, ob_id),
-- and owner_id carries the instance.
