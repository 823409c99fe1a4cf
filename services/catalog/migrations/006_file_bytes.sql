-- The size of the file as uploaded, beside everything stored for it: the upload's
-- lease records it at BeginUpload, the content keeps it. Contents stored before
-- this migration read 0 (unknown).
ALTER TABLE upload_leases ADD COLUMN file_bytes bigint NOT NULL DEFAULT 0 CHECK (file_bytes >= 0);
ALTER TABLE contents ADD COLUMN file_bytes bigint NOT NULL DEFAULT 0 CHECK (file_bytes >= 0);
