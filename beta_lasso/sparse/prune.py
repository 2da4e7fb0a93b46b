r"""Magnitude pruning of a trained network to another run's per-layer density.

  python -m beta_lasso.sparse.prune --workdir=SGD_RUN --like=BETA_LASSO_RUN \
      --out=/tmp/pruned.npz

Keeps in each kernel of --workdir's newest checkpoint the weights of largest
magnitude, as many as --like's newest checkpoint has non-zero in that layer,
zeroes the rest (no fine-tuning), exports the result like `beta_lasso.sparse.export`
and prints the test accuracy before and after. Set against the --like run's
own accuracy, this says what beta-LASSO's sparsity is worth over pruning after
the fact at the same budget of weights.
"""
import json
import sys

from absl import app
from absl import flags
from etils import epath
import numpy as np

from beta_lasso.sparse import export
from beta_lasso.data import input_pipeline
from beta_lasso.training import loading
from beta_lasso import optim
from beta_lasso import sparse
from beta_lasso.training import workdir as workdir_lib


def magnitude_prune(kernel: np.ndarray, keep: int) -> np.ndarray:
  """`kernel` with all but its `keep` largest-magnitude entries set to 0."""
  flat = np.abs(kernel).ravel()
  if keep >= np.count_nonzero(flat):
    return kernel
  # argpartition: the keep largest in O(n); ties at the cut go either way.
  survivors = np.argpartition(flat, flat.size - keep)[flat.size - keep:]
  pruned = np.zeros(flat.size, kernel.dtype)
  pruned[survivors] = kernel.ravel()[survivors]
  return pruned.reshape(kernel.shape)


def prune_like(workdir, like, out) -> dict:
  """Prunes `workdir` to the per-layer non-zeros of `like`; writes `out`.

  Returns:
    {'nnz': per-layer non-zeros kept, 'meta': the exported file's meta}.

  Raises:
    ValueError: the two runs' layers differ in name or size.
  """
  like_params = loading.load_params(like)
  target = optim.count_nonzero(like_params)
  shapes = optim.count_weights(like_params)
  del like_params

  def transform(params):
    sizes = optim.count_weights(params)
    if sizes != shapes:
      raise ValueError(f'{workdir} has layers {sizes}, {like} has {shapes}: '
                       'prune to a run of the same model and size')
    for name, keep in target.items():
      node = params
      for part in name.split('/'):
        node = node[part]
      node['kernel'] = magnitude_prune(np.asarray(node['kernel']), keep)
    return params

  meta = export.export(workdir, out, transform_params=transform)
  return {'nnz': target, 'meta': meta}


def accuracy(path, dataset: str, split: str) -> float:
  """Test accuracy of an exported network."""
  images, labels = input_pipeline.load_split(dataset, split, None, False)
  logits = sparse.load(path).predict(images)
  return float(np.mean(logits.argmax(-1) == labels))


def _define_flags():
  """Defined only when this module is the script (see export.py)."""
  flags.DEFINE_string('workdir', None, 'The run to prune (e.g. SGD).')
  flags.DEFINE_string('like', None,
                      'The run whose per-layer non-zeros to match.')
  flags.DEFINE_string('out', None, 'The pruned .npz to write.')
  flags.mark_flags_as_required(['workdir', 'like', 'out'])


def main(argv):
  del argv
  args = flags.FLAGS
  try:
    result = prune_like(args.workdir, args.like, args.out)
  except (export.UnsupportedModelError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  config = result['meta']['config']
  pruned = accuracy(args.out, config['dataset'],
                    config.get('eval_split', 'test'))
  dense = json.loads((epath.Path(args.workdir) /
                      workdir_lib.RESULTS_FILE).read_text())['test_accuracy']
  like = loading.load_results(args.like)
  like_acc = (like.get('test_accuracy') or
              like['history'][-1]['test_accuracy'])
  print(f'non-zeros kept: {result["nnz"]}')
  print(f'{args.workdir}: test accuracy {dense:.4f} dense, {pruned:.4f} '
        f'pruned; {args.like}: {like_acc:.4f}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
