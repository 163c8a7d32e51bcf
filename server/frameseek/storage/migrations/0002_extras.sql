-- Per-video data of a collection's other modalities (storage.base.ModalityData; the SQLite
-- catalog's schema 3): which modalities a collection has, and each video's items of each (their
-- times and the modality's opaque payload), written in the transaction of the pending row and
-- deleted with the video. Their vectors live in Milvus, one collection per (collection, modality).
ALTER TABLE collections ADD COLUMN modalities JSONB NOT NULL DEFAULT '{}';

CREATE TABLE video_extras (
  video_id BIGINT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
  modality TEXT NOT NULL,
  times BYTEA NOT NULL,                     -- float64 little-endian, item i -> time (s)
  payload BYTEA NOT NULL DEFAULT '',
  PRIMARY KEY (video_id, modality)
);
