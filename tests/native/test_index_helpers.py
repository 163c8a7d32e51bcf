"""frameseek.index: re-exports and the explicit conversion helpers."""
import numpy as np
import pytest

from frameseek import _native
from frameseek.index import (
    NO_ID,
    Filter,
    FlatIndex,
    as_ids,
    as_query_matrix,
    as_vectors,
    normalise,
    valid_mask,
)


def test_reexports_are_the_native_objects():
    assert FlatIndex is _native.FlatIndex and Filter is _native.Filter and NO_ID == _native.NO_ID


def test_helpers_feed_the_native_index():
    index = FlatIndex(3, "ip")
    x = [[1, 0, 0], [0, 2, 0], [0, 0, 3]]  # ints in a list: not accepted natively
    with pytest.raises(TypeError):
        index.add(as_ids([1, 2, 3]), x)
    index.add(as_ids([1, 2, 3]), normalise(x))
    ids, dist = index.search(as_query_matrix([0.0, 0.0, 5.0]), 5)
    assert ids[0, 0] == 3 and dist[0, 0] == pytest.approx(1 - 5.0)
    assert valid_mask(ids).tolist() == [[True, True, True, False, False]]


def test_as_vectors_converts_and_checks():
    strided = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2]
    out = as_vectors(strided, 3)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (4, 3)
    f32 = np.ones((2, 3), np.float32)
    assert as_vectors(f32) is f32  # no copy when already right
    with pytest.raises(ValueError, match="dimension 3, expected 4"):
        as_vectors(f32, 4)
    with pytest.raises(ValueError, match="NaN"):
        as_vectors([[np.nan, 1.0]])
    with pytest.raises(ValueError, match="2-D"):
        as_vectors(np.ones(3))
    with pytest.raises(TypeError):
        as_vectors(np.array([["a"]]))
    assert as_query_matrix(np.ones(3)).shape == (1, 3)


def test_as_ids():
    assert as_ids(5).tolist() == [5] and as_ids([]).dtype == np.uint64
    assert as_ids(np.array([1, 2], np.int32)).dtype == np.uint64
    with pytest.raises(ValueError, match="non-negative"):
        as_ids([-1])
    with pytest.raises(TypeError):
        as_ids([1.5])
    with pytest.raises(ValueError, match="reserved"):
        as_ids(np.array([NO_ID], np.uint64))
    with pytest.raises(ValueError, match="1-D"):
        as_ids([[1]])


def test_normalise_unit_rows():
    n = normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(np.linalg.norm(n[0]), 1.0, rtol=1e-6)
    assert np.all(n[1] == 0)
