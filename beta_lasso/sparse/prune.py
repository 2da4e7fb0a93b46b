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

from absl import app
from absl import flags
import numpy as np

from beta_lasso import errors
from beta_lasso import optim
from beta_lasso import sparse
from beta_lasso.data import input_pipeline
from beta_lasso.sparse import export
from beta_lasso.training import loading


class PruneError(errors.UserError, ValueError):
  """Two runs that cannot be pruned one like the other."""


def magnitude_prune(kernel: np.ndarray, keep: int) -> np.ndarray:
  """`kernel` with all but its `keep` largest-magnitude entries set to 0."""
  flat = np.abs(kernel).ravel()
  if keep >= np.count_nonzero(flat):
    return kernel
  # argpartition: the keep largest in O(n); ties at the cut go either way.
  survivors = np.argpartition(flat, flat.size - keep)[flat.size - keep :]
  pruned = np.zeros(flat.size, kernel.dtype)
  pruned[survivors] = kernel.ravel()[survivors]
  return pruned.reshape(kernel.shape)


def prune_like(workdir, like, out) -> dict:
  """Prunes `workdir` to the per-layer non-zeros of `like`; writes `out`.

  Returns:
    {'nnz': per-layer non-zeros kept, 'meta': the exported file's meta}.

  Raises:
    PruneError: the two runs' layers differ in name or size.
  """
  errors.check_output_file(out)
  like_params = loading.load_params(like)
  target = optim.count_nonzero(like_params)
  shapes = optim.count_weights(like_params)
  del like_params

  def transform(params):
    sizes = optim.count_weights(params)
    if sizes != shapes:
      raise PruneError(
          f'{workdir} has layers {sizes}, {like} has {shapes}: '
          'prune to a run of the same model and size'
      )
    for name, keep in target.items():
      node = params
      for part in name.split('/'):
        node = node[part]
      node['kernel'] = magnitude_prune(np.asarray(node['kernel']), keep)
    return params

  meta = export.export(workdir, out, transform_params=transform)
  return {'nnz': target, 'meta': meta}


def accuracy(path, config: dict) -> float:
  """Test accuracy of an exported network on its run's eval split.

  Args:
    path: the exported .npz.
    config: the run's flattened config: the split is read from its data file,
      else from TFDS in its data dir, never downloaded.
  """
  images, labels = input_pipeline.load_split(
      config['dataset'],
      config.get('eval_split', 'test'),
      config.get('data_dir'),
      False,
      config.get('data_file'),
  )
  logits = sparse.load(path).predict(images)
  return float(np.mean(logits.argmax(-1) == labels))


def _define_flags():
  """Defined only when this module is the script (see export.py)."""
  flags.DEFINE_string('workdir', None, 'The run to prune (e.g. SGD).')
  flags.DEFINE_string(
      'like', None, 'The run whose per-layer non-zeros to match.'
  )
  flags.DEFINE_string('out', None, 'The pruned .npz to write.')
  flags.mark_flags_as_required(['workdir', 'like', 'out'])


def _last_accuracy(workdir) -> str:
  """The run's test accuracy; for a run not finished, its last eval's."""
  results = loading.load_results(workdir)
  accuracy_ = results.get('test_accuracy')
  if accuracy_ is None and results.get('history'):
    accuracy_ = results['history'][-1].get('test_accuracy')
  return 'not evaluated yet' if accuracy_ is None else f'{accuracy_:.4f}'


def main(argv):
  del argv
  args = flags.FLAGS
  # Both runs are read before the work starts: a typo costs no pruning.
  dense, like = _last_accuracy(args.workdir), _last_accuracy(args.like)
  result = prune_like(args.workdir, args.like, args.out)
  pruned = accuracy(args.out, result['meta']['config'])
  print(f'non-zeros kept: {result["nnz"]}')
  print(
      f'{args.workdir}: test accuracy {dense} dense, {pruned:.4f} '
      f'pruned; {args.like}: {like}'
  )


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
