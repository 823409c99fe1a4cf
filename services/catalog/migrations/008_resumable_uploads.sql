-- Resumable (tus) uploads in progress: bound to their creator and the OB context given
-- at creation, each holds its staging object (the sweep leaves it alone) until it
-- completes, is terminated or expires; then the sweep removes what is left.
CREATE TABLE resumable_uploads (
    upload_id     uuid PRIMARY KEY,
    owner_id      text NOT NULL,
    ob_id         bigint NOT NULL,
    run_id        text NOT NULL,
    ob            bytea NOT NULL,            -- common.v1.ObContext as given at creation
    bandpass      text NOT NULL DEFAULT '',
    file_name     text NOT NULL DEFAULT '',
    length_bytes  bigint NOT NULL CHECK (length_bytes > 0),
    staging_key   text NOT NULL UNIQUE,
    multipart_id  text NOT NULL DEFAULT '',  -- the S3 multipart upload, once begun
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    claim_token   uuid,                      -- the PATCH writing now: one at a time
    claimed_until timestamptz
);
CREATE INDEX resumable_uploads_owner ON resumable_uploads (owner_id, expires_at);
CREATE INDEX resumable_uploads_expiry ON resumable_uploads (expires_at);
