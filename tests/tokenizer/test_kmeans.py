import sys
import types

import joblib
import numpy as np
import pytest
import torch

from twist.tokenizer.kmeans import KMeansQuantizer, convert_legacy_kmeans, fit_kmeans


def test_assign_is_nearest_centroid():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((37, 12)).astype(np.float32)
    x = rng.standard_normal((1000, 12)).astype(np.float32)
    q = KMeansQuantizer(c)
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(q.assign(torch.from_numpy(x), chunk=128).numpy(), brute)


def test_fit_recovers_separated_clusters():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((5, 8)).astype(np.float32) * 20
    labels = rng.integers(0, 5, 2000)
    x = centers[labels] + rng.standard_normal((2000, 8)).astype(np.float32) * 0.1
    q = fit_kmeans(x, 5, niter=10, seed=0)
    units = q.assign(torch.from_numpy(x)).numpy()
    # same partition up to relabelling
    mapping = {int(a): int(b) for a, b in zip(labels, units)}
    assert len(set(mapping.values())) == 5
    assert all(mapping[int(a)] == int(b) for a, b in zip(labels, units))
    with pytest.raises(ValueError, match="only 3 frames"):
        fit_kmeans(x[:3], 5)


def test_safetensors_roundtrip_and_tamper_detection(tmp_path):
    q = KMeansQuantizer(np.random.default_rng(2).standard_normal((10, 4)), {"niter": 3})
    q.save(tmp_path / "k.safetensors")
    r = KMeansQuantizer.load(tmp_path / "k.safetensors")
    assert r.fingerprint() == q.fingerprint() and r.info["niter"] == 3
    torch.testing.assert_close(r.centroids, q.centroids)
    from safetensors.torch import save_file

    save_file({"centroids": q.centroids + 1}, str(tmp_path / "bad.safetensors"),
              metadata={"fingerprint": q.fingerprint()})
    with pytest.raises(ValueError, match="fingerprint"):
        KMeansQuantizer.load(tmp_path / "bad.safetensors")


def test_legacy_joblib_bin_needs_allow_pickle(tmp_path, monkeypatch):
    # A stand-in for sklearn's MiniBatchKMeans, pickled under sklearn's module path like the
    # GSLM / textlesslib release files (sklearn itself is not a dependency).
    mod = types.ModuleType("sklearn.cluster._kmeans")

    class MiniBatchKMeans:
        pass

    MiniBatchKMeans.__module__ = mod.__name__
    MiniBatchKMeans.__qualname__ = "MiniBatchKMeans"
    mod.MiniBatchKMeans = MiniBatchKMeans
    for name in ("sklearn", "sklearn.cluster", "sklearn.cluster._kmeans"):
        monkeypatch.setitem(sys.modules, name, mod if name.endswith("_kmeans") else types.ModuleType(name))
    km = MiniBatchKMeans()
    km.cluster_centers_ = np.random.default_rng(3).standard_normal((50, 6)).astype(np.float32)
    joblib.dump(km, tmp_path / "km50.bin")
    with pytest.raises(ValueError, match="allow_pickle"):
        convert_legacy_kmeans(tmp_path / "km50.bin", tmp_path / "k.safetensors")
    assert not (tmp_path / "k.safetensors").exists()
    q = convert_legacy_kmeans(tmp_path / "km50.bin", tmp_path / "k.safetensors", allow_pickle=True)
    r = KMeansQuantizer.load(tmp_path / "k.safetensors")
    np.testing.assert_array_equal(r.centroids.numpy(), km.cluster_centers_)
    assert q.n_units == 50 and r.fingerprint() == q.fingerprint()
