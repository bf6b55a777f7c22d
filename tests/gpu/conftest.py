"""The fixture of the CUDA tests that compare devices: fp32 without TF32, so that fp32 means fp32."""
import pytest
from cuda_helpers import _fp32_without_tf32  # tests/gpu is on sys.path: pytest's rootdir import


@pytest.fixture
def exact_fp32():
    """Matrix products and convolutions in true fp32 (TF32 off) for the duration of a test."""
    with _fp32_without_tf32():
        yield
