r"""Sparse inference from an exported file against the dense forward pass.

  python benchmarks/sparse_inference.py [--workdir=DIR ...] \
      [--densities=0.001,0.01,0.1] [--layer_densities=0.0005,0.0074,0.36] \
      [--alpha=150] [--crossover]

Cases:
  * synthetic: S-FC at `--alpha` (150 is the paper's 256M weights) with random
    weights, every layer randomly sparsified to each of `--densities`, and
    per layer to `--layer_densities`;
  * real: the newest checkpoint of each `--workdir` (any exportable run).
For each case, side by side in one process: the dense forward pass (the flax
model, jitted, as training evaluates it) and the exported network through
`beta_lasso.sparse` with the scipy and the BCOO backends, at batch 1 (median
latency) and batch 256 (images/s); the bytes of the weights held for
inference; the file size against the dense checkpoint (the orbax folder for a
real run; float32 parameters, 4 bytes each, for a synthetic one). For a real
run the sparse logits are also compared with the dense ones on 1,000 test
images. `--crossover` times one CSR layer at densities from 1%
to 50% against XLA's dense matmul, to place `sparse.DENSE_ABOVE`. Prints markdown tables.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from beta_lasso import models
from beta_lasso import sparse
from beta_lasso.data import augmentation
from beta_lasso.data import input_pipeline
from beta_lasso.sparse import export
from beta_lasso.training import loading

BATCH_LATENCY, BATCH_THROUGHPUT = 1, 256
# BCOO's CPU product runs at ~50M multiply-adds/s: above this many stored
# weights a batch of 256 takes minutes, and is not timed.
BCOO_MAX_NNZ = 5_000_000


def timed(fn, *, min_seconds: float = 2.0, max_calls: int = 200) -> float:
  """Median seconds of fn() after one warm-up call (compilation)."""
  fn()  # Compiles.
  times = []
  start = time.perf_counter()
  while len(times) < max_calls:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
    # A slow call is measured fewer times rather than for minutes.
    if time.perf_counter() - start > min_seconds and len(times) >= 3:
      break
    if times[0] > min_seconds:
      break
  return float(np.median(times))


def _dir_bytes(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def dense_forward(model_name: str, alpha, model_kwargs, variables, info):
  """fn(uint8 images) -> logits: the flax model as training evaluates it."""
  model = models.create_model(
      model_name, num_classes=info.num_classes, alpha=alpha, **model_kwargs
  )
  variables = jax.device_put(
      {'params': variables['params'], 'batch_stats': variables['batch_stats']}
  )

  @jax.jit
  def apply(variables, images):
    return model.apply(
        variables, augmentation.normalize(images, info), train=False
    )

  return lambda images: apply(variables, images).block_until_ready()


def measure(
    path: pathlib.Path,
    dense_fn,
    dense_bytes: int,
    dense_file_bytes: int,
    image_shape,
    nnz: int,
    dense_times: dict | None = None,
) -> dict:
  """Times dense_fn and the exported file's backends on random images.

  `dense_times` ({'dense_1': s, 'dense_256': s}), when given, are reused: the
  dense pass takes the same time whatever the values of the weights.
  """
  rng = np.random.default_rng(0)
  images = {
      b: rng.integers(0, 256, (b, *image_shape), dtype=np.uint8)
      for b in (BATCH_LATENCY, BATCH_THROUGHPUT)
  }
  row = {
      'file_bytes': path.stat().st_size,
      'dense_file_bytes': dense_file_bytes,
      'dense_bytes': dense_bytes,
  }
  if dense_times:
    row.update(dense_times)
  else:
    for b, x in images.items():
      jx = jnp.asarray(x)
      row[f'dense_{b}'] = timed(lambda: dense_fn(jx))  # pylint: disable=cell-var-from-loop
  for backend in ('scipy', 'bcoo'):
    net = sparse.load(path, backend=backend)
    row['plan'] = net.plan
    row[f'{backend}_bytes'] = net.weight_bytes()
    for b, x in images.items():
      if backend == 'bcoo' and b > 1 and nnz > BCOO_MAX_NNZ:
        row[f'{backend}_{b}'] = math.nan  # Minutes a call; see BCOO_MAX_NNZ.
        continue
      row[f'{backend}_{b}'] = timed(
          lambda net=net, x=x, b=b: net.predict(x, batch_size=b)
      )
    del net
  return row


def synthetic_case(alpha: int, densities: tuple[float, ...], tmp: pathlib.Path):
  """S-FC at `alpha`, kernel i randomly `densities[i]` non-zero."""
  info = input_pipeline.DATASETS['cifar10']
  model = models.create_model('sfc', num_classes=10, alpha=alpha)
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, *info.image_shape)), train=False
      )
  )
  rng = np.random.default_rng(1)
  layer_density = dict(zip(('layer1', 'fc1', 'head'), densities))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      density = layer_density[path[1].key]
      fan_in = math.prod(leaf.shape[:-1])
      kernel = rng.standard_normal(leaf.shape, np.float32)
      kernel *= np.float32(1 / math.sqrt(fan_in * density))
      kernel[rng.random(leaf.shape, np.float32) >= density] = 0
      return kernel
    if 'var' in name or 'scale' in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  layers = export.network_layers(
      'sfc',
      alpha,
      variables['params'],
      variables['batch_stats'],
      info.image_shape,
  )
  path = tmp / f'sfc_{alpha}_{"_".join(map(str, densities))}.npz'
  meta = {
      'model': 'sfc',
      'alpha': alpha,
      'num_classes': 10,
      'image_shape': list(info.image_shape),
      'mean': list(info.mean),
      'std': list(info.std),
      'config': {},
  }
  meta = export.write(path, meta, layers)
  del layers
  dense_bytes = sum(x.nbytes for x in jax.tree.leaves(variables))
  weights = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes['params']))
  fn = dense_forward('sfc', alpha, {}, variables, info)
  return path, fn, dense_bytes, 4 * weights, meta


def real_case(workdir: pathlib.Path, tmp: pathlib.Path):
  """The newest checkpoint of a training run, exported."""
  path = tmp / f'{workdir.name}.npz'
  meta = export.export(workdir, path)
  info = input_pipeline.DATASETS[meta['config']['dataset']]
  variables = loading.load_variables(workdir)
  dense_bytes = sum(
      x.nbytes
      for x in jax.tree.leaves(
          {
              'params': variables['params'],
              'batch_stats': variables['batch_stats'],
          }
      )
  )
  fn = dense_forward(
      meta['model'], meta['alpha'], meta['model_kwargs'], variables, info
  )
  step_dir = workdir / 'checkpoints' / str(meta['step'])
  return path, fn, dense_bytes, _dir_bytes(step_dir), meta


def agreement(path, dense_fn, dataset: str) -> dict:
  """Largest logit difference and argmax agreement on 1,000 test images."""
  images, labels = input_pipeline.load_split(
      dataset, 'test[:1000]', None, False
  )
  dense = np.asarray(dense_fn(jnp.asarray(images)))
  logits = sparse.load(path).predict(images)
  return {
      'max_abs_logit_diff': float(np.abs(logits - dense).max()),
      'same_argmax': float(np.mean(logits.argmax(1) == dense.argmax(1))),
      'accuracy': float(np.mean(logits.argmax(1) == labels)),
  }


def crossover(rows: int = 8192, cols: int = 3072) -> list[dict]:
  """One layer: scipy CSR against the dense path's XLA matmul."""
  import scipy.sparse  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(2)
  matmul = jax.jit(lambda w, x: w @ x)
  out = []
  for density in (0.01, 0.03, 0.1, 0.2, 0.3, 0.5):
    dense = rng.standard_normal((rows, cols), np.float32)
    dense[rng.random(dense.shape, np.float32) >= density] = 0
    matrix = scipy.sparse.csr_matrix(dense)
    weights = jnp.asarray(dense)
    row = {'density': density}
    for b in (BATCH_LATENCY, BATCH_THROUGHPUT):
      x = rng.standard_normal((cols, b), np.float32)
      row[f'xla_{b}'] = timed(  # pylint: disable=cell-var-from-loop
          lambda: np.asarray(matmul(weights, x)), min_seconds=0.5
      )
      row[f'csr_{b}'] = timed(lambda: matrix @ x, min_seconds=0.5)  # pylint: disable=cell-var-from-loop
    out.append(row)
  return out


def _mb(n):
  return f'{n / 2**20:,.1f} MB'


def print_table(rows: list[dict]):
  print(
      '| case | non-zero | plan | batch 1: dense / scipy / bcoo (ms) | '
      'speed-up b1 | batch 256: dense / scipy / bcoo (img/s) | speed-up b256 '
      '| weights in memory: dense / sparse | smaller | file: dense / '
      'sparse | smaller |'
  )
  print('|' + '---|' * 11)
  for r in rows:
    b1 = [r[f'{k}_1'] * 1e3 for k in ('dense', 'scipy', 'bcoo')]
    b256 = [
        BATCH_THROUGHPUT / r[f'{k}_256'] for k in ('dense', 'scipy', 'bcoo')
    ]
    best1 = min(b1[1:])
    best256 = max(b256[1:])
    print(
        f'| {r["case"]} | {r["nnz_fraction"]:.3%} | {"/".join(r["plan"])} | '
        f'{b1[0]:.3g} / {b1[1]:.3g} / {b1[2]:.3g} | {b1[0] / best1:.1f}x | '
        f'{b256[0]:,.0f} / {b256[1]:,.0f} / {b256[2]:,.0f} | '
        f'{best256 / b256[0]:.2f}x | {_mb(r["dense_bytes"])} / '
        f'{_mb(r["scipy_bytes"])} | {r["dense_bytes"] / r["scipy_bytes"]:.1f}x'
        f' | {_mb(r["dense_file_bytes"])} / {_mb(r["file_bytes"])} | '
        f'{r["dense_file_bytes"] / r["file_bytes"]:.1f}x |'
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      '--workdir',
      action='append',
      default=[],
      help='a training workdir (repeatable; names may hold ' 'commas)',
  )
  parser.add_argument('--densities', default='0.001,0.01,0.1')
  parser.add_argument(
      '--layer_densities',
      default='',
      help='one more synthetic case with these densities of '
      'layer1,fc1,head (the paper reports ~0.0005,0.0074,'
      '0.36 for beta-LASSO at alpha 150)',
  )
  parser.add_argument('--alpha', type=int, default=150)
  parser.add_argument('--crossover', action='store_true')
  parser.add_argument('--json', default='', help='also write the rows here')
  args = parser.parse_args()
  print(
      f'jax {jax.__version__}, {os.cpu_count()} CPUs, '
      f'{time.strftime("%Y-%m-%d %H:%M")}',
      flush=True,
  )

  rows = []
  synthetic_dense = None  # Same shape, same dense times: measured once.
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    cases = [
        ('synthetic', (float(d),) * 3) for d in args.densities.split(',') if d
    ]
    if args.layer_densities:
      cases.append(
          (
              'synthetic',
              tuple(float(d) for d in args.layer_densities.split(',')),
          )
      )
    cases += [('real', pathlib.Path(w)) for w in args.workdir]
    for kind, what in cases:
      if kind == 'synthetic':
        path, fn, dense_bytes, dense_file, meta = synthetic_case(
            args.alpha, what, tmp
        )
        name = f'S-FC alpha {args.alpha}, random ' + ' / '.join(
            f'{d:.2%}' for d in sorted(set(what), key=what.index)
        )
      else:
        path, fn, dense_bytes, dense_file, meta = real_case(what, tmp)
        name = (
            f'{meta["model"]} alpha {meta["alpha"]}, {what.name} step '
            f'{meta["step"]}'
        )
      nnz = sum(layer['nnz'] for layer in meta['layers'])
      row = measure(
          path,
          fn,
          dense_bytes,
          dense_file,
          meta['image_shape'],
          nnz,
          synthetic_dense if kind == 'synthetic' else None,
      )
      if kind == 'synthetic':
        synthetic_dense = {k: row[k] for k in ('dense_1', 'dense_256')}
      total = sum(math.prod(layer['kernel_shape']) for layer in meta['layers'])
      row.update(
          case=name,
          nnz_fraction=nnz / total,
          layer_density={
              l['name']: l['nnz'] / math.prod(l['kernel_shape'])
              for l in meta['layers']
          },
      )
      if kind == 'real':
        row.update(agreement(path, fn, meta['config']['dataset']))
      rows.append(row)
      print(json.dumps(row), flush=True)
      path.unlink()
      del fn
  print()
  print_table(rows)
  if args.crossover:
    print('\n| density | batch 1: XLA / CSR (us) | batch 256: XLA / CSR (ms) |')
    print('|---|---|---|')
    for r in crossover():
      print(
          f'| {r["density"]:.0%} | {r["xla_1"] * 1e6:.0f} / '
          f'{r["csr_1"] * 1e6:.0f} | {r["xla_256"] * 1e3:.1f} / '
          f'{r["csr_256"] * 1e3:.1f} |'
      )
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
  main()
