"""Shared fixtures for the whole suite."""

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` (pyproject markers) run only where the NVIDIA driver reports a device."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    from frameseek.media.nvdec import cuda_driver_device_count

    n, why = cuda_driver_device_count()
    if n == 0:
        skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU: {why}")
        for item in gpu_tests:
            item.add_marker(skip)
