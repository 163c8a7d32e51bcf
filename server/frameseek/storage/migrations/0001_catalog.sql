-- The scale-out catalog (frameseek.storage.postgres): what the SQLite catalog of the embedded store
-- holds (storage/catalog.py), shared by every frameseek server of a deployment. Video rows go
-- pending -> active (the commit point, after Milvus has the vectors) -> deleting -> gone; only
-- active rows are ever searched. `owner` + `lease_until` say which server's ingest a pending row
-- is and until when it may still commit (afterwards any server sweeps it, its vectors first).
CREATE TABLE collections (
  id BIGSERIAL PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL,
  dimension INTEGER NOT NULL,
  metric TEXT NOT NULL CHECK (metric IN ('ip', 'l2')),
  sampling JSONB NOT NULL,
  index_settings JSONB NOT NULL,
  create_time DOUBLE PRECISION NOT NULL,
  is_default BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE videos (
  id BIGSERIAL PRIMARY KEY,                 -- never reused: sample ids are derived from it
  collection_id BIGINT NOT NULL REFERENCES collections(id),
  state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'damaged', 'deleting')),
  kind TEXT NOT NULL,
  duration DOUBLE PRECISION NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  sample_count INTEGER NOT NULL,
  vector_count INTEGER NOT NULL,            -- samples, or twice that with coarse twins
  size_bytes BIGINT NOT NULL,
  content_sha256 TEXT NOT NULL,
  external_key TEXT NOT NULL DEFAULT '',
  labels JSONB NOT NULL DEFAULT '{}',
  filename TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL DEFAULT '',
  realtime_factor DOUBLE PRECISION NOT NULL DEFAULT 0,
  create_time DOUBLE PRECISION NOT NULL,
  sample_times BYTEA NOT NULL,              -- float64 little-endian, sample i -> timestamp (s)
  owner TEXT NOT NULL DEFAULT '',           -- the server whose ingest a pending row is
  lease_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX videos_by_collection ON videos (collection_id, state, id);
CREATE INDEX videos_by_hash ON videos (collection_id, content_sha256);
CREATE INDEX videos_by_key ON videos (external_key);
CREATE INDEX videos_by_labels ON videos USING GIN (labels jsonb_path_ops);
CREATE INDEX videos_unsettled ON videos (state) WHERE state IN ('pending', 'deleting');

CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  collection_id BIGINT NOT NULL,
  state TEXT NOT NULL,
  request_id TEXT NOT NULL DEFAULT '',
  samples_done INTEGER NOT NULL DEFAULT 0,
  samples_total INTEGER NOT NULL DEFAULT 0,
  media_seconds_done DOUBLE PRECISION NOT NULL DEFAULT 0,
  duration DOUBLE PRECISION NOT NULL DEFAULT 0,
  video_id BIGINT,
  error_code INTEGER NOT NULL DEFAULT 0,
  error_reason TEXT NOT NULL DEFAULT '',
  error_message TEXT NOT NULL DEFAULT '',
  already_exists BOOLEAN NOT NULL DEFAULT false,
  create_time DOUBLE PRECISION NOT NULL,
  update_time DOUBLE PRECISION NOT NULL,
  owner TEXT NOT NULL DEFAULT ''            -- the server that spooled the upload and runs the job
);
CREATE UNIQUE INDEX jobs_by_request ON jobs (request_id) WHERE request_id != '';
CREATE INDEX jobs_unfinished ON jobs (owner, state) WHERE state IN ('QUEUED', 'RUNNING');
