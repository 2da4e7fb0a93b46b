"""Compressed sparse rows in plain numpy: the storage of exported kernels.

A CSR matrix here is a dict {'data', 'indices', 'indptr', 'shape'}: row r
holds the values data[indptr[r]:indptr[r + 1]] at the columns
indices[indptr[r]:indptr[r + 1]], columns increasing. Column indices take the
smallest unsigned dtype that holds every column (uint16 up to 65,536 columns,
which every layer of S-FC at the paper's size fits), so an entry costs 6 bytes
instead of 8. Only numpy is needed to read or write one; scipy and
jax.experimental.sparse take the same three arrays.
"""

import numpy as np


def index_dtype(size: int) -> np.dtype:
  """The smallest unsigned integer dtype that holds 0 .. size - 1."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if size <= np.iinfo(dtype).max + 1:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


def from_dense(matrix: np.ndarray) -> dict:
  """The CSR form of a 2-D array; exact (only exact zeros are dropped)."""
  matrix = np.asarray(matrix)
  if matrix.ndim != 2:
    raise ValueError(f'expected a 2-D array, got shape {matrix.shape}')
  rows, cols = np.nonzero(matrix)  # Row-major: rows sorted, columns within.
  return from_coo(rows, cols, matrix[rows, cols], matrix.shape, sorted_=True)


def from_coo(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    *,
    sorted_: bool = False,
) -> dict:
  """CSR from (row, column, value) triples without duplicates.

  Args:
    rows: row of each entry.
    cols: column of each entry.
    values: value of each entry.
    shape: (rows, columns) of the matrix.
    sorted_: the entries are already in row-major order.

  Returns:
    The CSR dict.
  """
  rows = np.asarray(rows, np.int64)
  cols = np.asarray(cols, np.int64)
  values = np.asarray(values)
  if not sorted_:
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
  indptr = np.zeros(shape[0] + 1, index_dtype(len(values) + 1))
  np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
  return {
      'data': values,
      'indices': cols.astype(index_dtype(shape[1])),
      'indptr': indptr,
      'shape': tuple(int(s) for s in shape),
  }


def row_ids(csr: dict) -> np.ndarray:
  """The row of every stored entry (the COO rows), as int64."""
  return np.repeat(np.arange(csr['shape'][0]), np.diff(csr['indptr']))


def to_dense(csr: dict) -> np.ndarray:
  """The 2-D array that `csr` stands for."""
  dense = np.zeros(csr['shape'], csr['data'].dtype)
  dense[row_ids(csr), csr['indices'].astype(np.int64)] = csr['data']
  return dense


def density(csr: dict) -> float:
  """Stored entries over all entries."""
  return len(csr['data']) / max(1, csr['shape'][0] * csr['shape'][1])


def nbytes(csr: dict) -> int:
  """Bytes of the three arrays."""
  return csr['data'].nbytes + csr['indices'].nbytes + csr['indptr'].nbytes
