"""kernels.interop: the kernels take and return arrays of the caller's DLPack framework."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from kernels import geometry, interop

KW = {"alpha": 3.0, "sigma": 2.0}


def _sample():
    rng = np.random.default_rng(0)
    return rng.normal(size=(24, 20, 2)).astype(np.float32), rng.integers(0, 3, (24, 20)).astype(np.int32)


def test_torch_tensor_goes_through_the_elastic_kernel_and_comes_back_as_torch():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    image, label = _sample()
    key = jax.random.PRNGKey(3)
    out_img, out_lab = interop.elastic_deform(key, torch.from_numpy(image), torch.from_numpy(label), **KW)
    assert isinstance(out_img, torch.Tensor) and isinstance(out_lab, torch.Tensor)
    assert tuple(out_img.shape) == image.shape and out_lab.dtype == torch.int32
    want_img, want_lab = geometry.elastic_deform(key, jax.numpy.asarray(image), jax.numpy.asarray(label), **KW)
    np.testing.assert_allclose(out_img.numpy(), np.asarray(want_img), atol=1e-6)
    np.testing.assert_array_equal(out_lab.numpy(), np.asarray(want_lab))
    assert not np.allclose(out_img.numpy(), image)  # it did deform


def test_numpy_in_numpy_out_and_jax_untouched():
    image, label = _sample()
    key = jax.random.PRNGKey(1)
    out = interop.elastic_deform(key, image, label, **KW)
    assert all(isinstance(o, np.ndarray) for o in out)
    z = interop.zscore(jax.numpy.asarray(image))
    assert isinstance(z, jax.Array)
