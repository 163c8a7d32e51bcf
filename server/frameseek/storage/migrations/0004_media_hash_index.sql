-- videos_by_hash holds media only (storage.base.ITEM_KIND; the SQLite catalog's schema 6): an
-- own-vector item's content hash names its vectors, and the lookups by hash (ingest's duplicate
-- check, ListVideos' content_sha256) find media only; a random key per item made index inserts
-- scatter over the whole index.
DROP INDEX videos_by_hash;
CREATE INDEX videos_by_hash ON videos (collection_id, content_sha256) WHERE kind != 'item';
