"""k-means over encoder frames: faiss to fit, torch to assign, safetensors to store.

This is the unit discovery step of GSLM (Lakhotia et al. 2021) and TWIST (Hassid et al. 2023):
K centroids (100/200/500) are fitted on a sample of frame features and every frame is then
mapped to its nearest centroid. Fitting uses faiss (fast, multi-threaded) on a bounded sample
of frames; assignment is a plain torch distance computation so it runs on the same device
as the encoder. Centroids are stored as safetensors with a JSON sidecar of facts; nothing is
pickled. The legacy sklearn/joblib ``.bin`` quantizers released with fairseq GSLM and
textlesslib are read only by :func:`convert_legacy_kmeans`, which insists on an explicit
``allow_pickle=True`` because unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.atomic import atomic_path
from twist.contract import fingerprint_arrays
from twist.errors import ContractMismatch, InputError, MissingDependencyError, MissingInputError

KMEANS_FILE = "kmeans.safetensors"


class KMeansQuantizer:
    """Nearest-centroid assignment with a fixed ``(K, D)`` codebook."""

    def __init__(self, centroids: np.ndarray | torch.Tensor, info: dict[str, Any] | None = None) -> None:
        c = torch.as_tensor(np.asarray(centroids, dtype=np.float32) if not torch.is_tensor(centroids) else centroids)
        if c.ndim != 2 or c.shape[0] < 1:
            raise InputError(f"k-means centroids must be a (K, D) matrix, got shape {tuple(c.shape)}")
        if not torch.isfinite(c).all():
            raise InputError("k-means centroids contain NaN or inf")
        self.centroids = c.float().contiguous()
        self._c_sq = (self.centroids**2).sum(1)
        self.info = dict(info or {})

    @property
    def n_units(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def fingerprint(self) -> str:
        return fingerprint_arrays(self.centroids)

    def to(self, device: str | torch.device) -> KMeansQuantizer:
        self.centroids = self.centroids.to(device)
        self._c_sq = self._c_sq.to(device)
        return self

    @torch.inference_mode()
    def assign(self, feats: torch.Tensor, *, chunk: int = 16384) -> torch.Tensor:
        """Index of the nearest centroid (squared L2) for each row of ``feats`` ``(T, D)``."""
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ContractMismatch(f"features of shape {tuple(feats.shape)} do not match centroids of dim {self.dim}")
        feats = feats.to(self.centroids.device, torch.float32)
        out = []
        for s in range(0, feats.shape[0], chunk):
            x = feats[s : s + chunk]
            # ||x||^2 is the same for every centroid, so it does not change the argmin
            d = self._c_sq[None, :] - 2.0 * (x @ self.centroids.T)
            out.append(d.argmin(dim=1))
        if not out:
            return torch.zeros(0, dtype=torch.long, device=self.centroids.device)
        return torch.cat(out)

    # -- storage ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        meta = {"n_units": str(self.n_units), "dim": str(self.dim), "fingerprint": self.fingerprint(),
                "info": json.dumps(self.info, sort_keys=True)}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({"centroids": self.centroids.detach().cpu().contiguous()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> KMeansQuantizer:
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"k-means codebook not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if "centroids" not in f.keys():
                    raise InputError(f"{path}: no 'centroids' tensor (keys: {list(f.keys())})")
                c = f.get_tensor("centroids")
        except ValueError:
            raise
        except Exception as e:  # safetensors raises its own error types for torn files
            raise InputError(f"{path}: not a readable safetensors codebook ({e})") from None
        q = cls(c, json.loads(meta.get("info", "{}")))
        if "fingerprint" in meta and meta["fingerprint"] != q.fingerprint():
            raise InputError(f"{path}: centroid values do not match the stored fingerprint (file corrupted?)")
        return q


def fit_kmeans(
    features: np.ndarray,
    n_units: int,
    *,
    niter: int = 20,
    seed: int = 0,
    max_points_per_centroid: int = 256,
    nredo: int = 1,
    verbose: bool = False,
) -> KMeansQuantizer:
    """Fit K centroids on ``features`` ``(N, D)`` with faiss.

    faiss itself subsamples to ``max_points_per_centroid * K`` points, which bounds fit time.
    """
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
    import faiss

    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"k-means features must be (N, D), got shape {x.shape}")
    if x.shape[0] < n_units:
        raise InputError(
            f"cannot fit K={n_units} centroids on only {x.shape[0]} frames; give more audio or a smaller K"
        )
    if not np.isfinite(x).all():
        raise ValueError("k-means features contain NaN or inf")
    km = faiss.Kmeans(
        x.shape[1], n_units, niter=niter, seed=seed, verbose=verbose, nredo=nredo,
        max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1,
    )
    km.train(x)
    info = {"n_frames": int(x.shape[0]), "niter": niter, "seed": seed, "backend": f"faiss-{faiss.__version__}",
            "objective": float(km.obj[-1]) if len(km.obj) else None}
    return KMeansQuantizer(km.centroids.copy(), info)


def convert_legacy_kmeans(src: str | Path, dst: str | Path, *, allow_pickle: bool = False) -> KMeansQuantizer:
    """Read a legacy sklearn/joblib k-means ``.bin`` (fairseq GSLM, textlesslib) once and
    write its centroids as a safe ``kmeans.safetensors``.

    Args:
        allow_pickle: must be ``True``: the legacy file is a pickle and loading it can execute
            code. Only convert files you trust.
    """
    src = Path(src)
    if not allow_pickle:
        from twist.errors import UnsafeFileError

        raise UnsafeFileError(
            f"{src} is a pickle (sklearn/joblib); converting it can run arbitrary code. "
            "Pass convert.allow_pickle=true if you trust this file."
        )
    if not src.exists():
        raise MissingInputError(f"legacy k-means file not found: {src}")
    try:
        import joblib
    except ImportError:
        raise MissingDependencyError("converting a legacy k-means .bin needs `pip install joblib scikit-learn`") from None
    try:
        obj = joblib.load(str(src))
    except ModuleNotFoundError as e:
        raise MissingDependencyError(f"{src}: unpickling needs the module {e.name!r} (pip install scikit-learn)") from None
    except Exception as e:
        raise InputError(f"{src}: cannot read as a joblib/pickle k-means model ({type(e).__name__}: {e})") from None
    centers = getattr(obj, "cluster_centers_", None)
    if centers is None and isinstance(obj, dict):
        centers = obj.get("cluster_centers_")
    if centers is None and isinstance(obj, np.ndarray):
        centers = obj
    if centers is None:
        raise InputError(f"{src}: no cluster_centers_ found in the {type(obj).__name__} object")
    q = KMeansQuantizer(np.asarray(centers, dtype=np.float32), {"converted_from": str(src), "legacy_type": type(obj).__name__})
    q.save(dst)
    return q
