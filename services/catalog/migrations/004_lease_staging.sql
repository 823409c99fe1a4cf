-- Upload leases also protect the gateway's staging object of the upload,
-- so a sweep with any min-age leaves uploads in flight alone.
ALTER TABLE upload_leases ADD COLUMN staging_key text;
CREATE INDEX upload_leases_staging ON upload_leases (staging_key) WHERE staging_key IS NOT NULL;
