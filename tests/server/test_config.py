"""Configuration precedence: defaults < TOML file < FRAMESEEK_* env < explicit overrides."""

import pydantic
import pytest

from frameseek import _native
from frameseek.config import DEFAULT_ADDRESS, load_settings


def test_defaults(monkeypatch):
    monkeypatch.delenv("FRAMESEEK_CONFIG", raising=False)
    s = load_settings()
    assert s.address == DEFAULT_ADDRESS and s.data_dir == "./data"


def test_file_env_and_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "fs.toml"
    cfg.write_text('data_dir = "/srv/fs"\ningest_workers = 3\naddress = "127.0.0.1:6000"\n')
    monkeypatch.setenv("FRAMESEEK_CONFIG", str(cfg))
    s = load_settings()
    assert (s.data_dir, s.ingest_workers, s.address) == ("/srv/fs", 3, "127.0.0.1:6000")
    monkeypatch.setenv("FRAMESEEK_INGEST_WORKERS", "5")
    assert load_settings().ingest_workers == 5  # env beats the file
    assert load_settings(address="127.0.0.1:7000", data_dir=None).address == "127.0.0.1:7000"  # flags beat env


def test_invalid_values_are_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("FRAMESEEK_CONFIG", raising=False)
    monkeypatch.setenv("FRAMESEEK_INGEST_WORKERS", "0")
    with pytest.raises(pydantic.ValidationError, match="ingest_workers"):
        load_settings()
    monkeypatch.delenv("FRAMESEEK_INGEST_WORKERS")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("no_such_setting = 1\n")
    monkeypatch.setenv("FRAMESEEK_CONFIG", str(cfg))
    with pytest.raises(pydantic.ValidationError, match="no_such_setting"):
        load_settings()
    monkeypatch.setenv("FRAMESEEK_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError):
        load_settings()


def test_query_deblock_sigma(monkeypatch):
    """SearchByVideo's deblocking query view: off (0) by default, a blur of 0 < sigma <= 16 px."""
    monkeypatch.delenv("FRAMESEEK_CONFIG", raising=False)
    assert load_settings().views.query_deblock_sigma == 0
    assert load_settings(views={"query_deblock_sigma": 2}).views.query_deblock_sigma == 2
    for bad in (-1, 17):
        with pytest.raises(pydantic.ValidationError, match="query_deblock_sigma"):
            load_settings(views={"query_deblock_sigma": bad})


@pytest.mark.parametrize("field", ["query_coarse_scale", "index_coarse_scale"])
def test_coarse_scales(monkeypatch, field):
    """SearchByVideo's coarse query view and ingest's coarse twins: on at 1/2 by default, 0 turns
    them off, and a scale the backends cannot run (below MIN_INPUT_SCALE, or 1 and above) is
    rejected, naming the setting."""
    monkeypatch.delenv("FRAMESEEK_CONFIG", raising=False)
    assert getattr(load_settings().views, field) == pytest.approx(0.5)
    assert getattr(load_settings(views={field: 0}).views, field) == 0
    for bad in (0.2, 1.0, -0.5):
        with pytest.raises(pydantic.ValidationError, match=field):
            load_settings(views={field: bad})


def test_groups_from_env_and_toml(tmp_path, monkeypatch):
    """A grouped setting is FRAMESEEK_<GROUP>__<FIELD> in the environment and a [group] table in
    TOML; a group given in part keeps the other fields' defaults; env beats the file per field."""
    cfg = tmp_path / "fs.toml"
    cfg.write_text("[media]\nmax_width = 3840\n\n[index]\nm = 24\n")
    monkeypatch.setenv("FRAMESEEK_CONFIG", str(cfg))
    s = load_settings()
    assert (s.media.max_width, s.media.max_height, s.index.m) == (3840, 7680, 24)
    assert s.index.ef_construction == _native.HNSW_DEFAULT_EF_CONSTRUCTION  # the native graph's own default
    monkeypatch.setenv("FRAMESEEK_MEDIA__MAX_WIDTH", "1920")
    monkeypatch.setenv("FRAMESEEK_MATCHING__COPY_THRESHOLD", "0.3")
    s = load_settings()
    assert (s.media.max_width, s.matching.copy_threshold, s.index.m) == (1920, 0.3, 24)
    cfg.write_text("[media]\nno_such_limit = 1\n")
    with pytest.raises(pydantic.ValidationError, match="no_such_limit"):
        load_settings()


def test_each_default_is_declared_once():
    """The pipeline's and the matcher's defaults are the settings groups' (one source per default),
    and the media limits are the media package's own."""
    from frameseek import matching, pipeline
    from frameseek.config import MediaConfig, Settings
    from frameseek.media import MediaLimits

    s = Settings()
    assert (pipeline.REFERENCE_FPS, pipeline.QUERY_FPS) == (s.sampling.default_fps, s.sampling.query_fps)
    assert (pipeline.QUERY_COARSE_SCALE, pipeline.INDEX_COARSE_SCALE) == (
        s.views.query_coarse_scale,
        s.views.index_coarse_scale,
    )
    assert (matching.COPY_THRESHOLD, matching.MatchSettings().frame_k) == (
        s.matching.copy_threshold,
        s.matching.frame_k,
    )
    assert issubclass(MediaConfig, MediaLimits) and s.media.max_duration_s == MediaLimits().max_duration_s


def test_storage_backend_settings_go_in_pairs(monkeypatch):
    """vector_store = milvus needs milvus_uri and a PostgreSQL catalog; the embedded store keeps
    SQLite (catalog_url sqlite:///PATH, default data_dir/catalog.sqlite3)."""
    from pydantic import ValidationError

    from frameseek.config import Settings

    for key in ("VECTOR_STORE", "MILVUS_URI", "CATALOG_URL"):
        monkeypatch.delenv(f"FRAMESEEK_{key}", raising=False)
    assert Settings(data_dir="/d").sqlite_catalog_path == "/d/catalog.sqlite3"
    assert Settings(catalog_url="sqlite:////x/c.db").sqlite_catalog_path == "/x/c.db"
    with pytest.raises(ValidationError, match="needs milvus_uri"):
        Settings(vector_store="milvus", catalog_url="postgresql://h/db")
    with pytest.raises(ValidationError, match="catalog_url = postgresql"):
        Settings(vector_store="milvus", milvus_uri="http://m:19530")
    with pytest.raises(ValidationError, match="keeps its catalog in SQLite"):
        Settings(catalog_url="postgresql://h/db")
    s = Settings(vector_store="milvus", milvus_uri="http://m:19530", catalog_url="postgresql://h/db")
    assert s.vector_store == "milvus"
