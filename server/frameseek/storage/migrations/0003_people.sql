-- The people tables (storage.people.PeopleTables, whose SQL runs on both catalogs; the SQLite
-- catalog's schema 5): persons of a collection (ids from a sequence: allocated once, never reused,
-- stable across servers and restarts; a display name) and which person each face track of a video
-- is. Track rows go with their video, persons with their collection; a person whose every track is
-- gone is no longer listed.
CREATE TABLE people (
  id BIGSERIAL PRIMARY KEY,
  collection_id BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
  display_name TEXT NOT NULL DEFAULT '',
  create_time DOUBLE PRECISION NOT NULL
);

CREATE TABLE person_tracks (
  video_id BIGINT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
  track INTEGER NOT NULL,
  person_id BIGINT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
  PRIMARY KEY (video_id, track)
);
CREATE INDEX person_tracks_by_person ON person_tracks (person_id);
CREATE INDEX people_by_collection ON people (collection_id, id);

-- A video's items of a modality, as the SQLite catalog names it (the people SQL asks which videos
-- have faces): derived from the float64 times, so it can never disagree with them.
ALTER TABLE video_extras ADD COLUMN item_count INTEGER GENERATED ALWAYS AS (length(times) / 8) STORED;
