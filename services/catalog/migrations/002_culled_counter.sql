-- Images culled since the catalog began: a counter for /metrics that never
-- goes down (tombstones expire, so counting them would).
ALTER TABLE usage ADD COLUMN IF NOT EXISTS culled_images bigint NOT NULL DEFAULT 0;
