"""Sparse networks: CSR storage, export from a workdir, inference and pruning.

`beta_lasso.sparse.load(path).predict(images)` classifies with an exported file;
the loader lives in `inference.py` and is re-exported here as the package's API.
"""

from beta_lasso.sparse.inference import BACKENDS
from beta_lasso.sparse.inference import DENSE_ABOVE
from beta_lasso.sparse.inference import SparseNetwork
from beta_lasso.sparse.inference import kernel
from beta_lasso.sparse.inference import layer_csr
from beta_lasso.sparse.inference import load
from beta_lasso.sparse.inference import read
from beta_lasso.sparse.inference import unroll

__all__ = [
    'BACKENDS',
    'DENSE_ABOVE',
    'SparseNetwork',
    'kernel',
    'layer_csr',
    'load',
    'read',
    'unroll',
]
