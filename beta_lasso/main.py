"""Trains and evaluates a model of the paper.

  python -m beta_lasso.main --config=configs/sconv.py:cpu --workdir=/tmp/sconv

Any config field can be overridden on the command line, e.g.
`--config.alpha=16 --config.num_epochs=30`. Running the same command again
resumes from the workdir's latest checkpoint.
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from beta_lasso import input_pipeline
from beta_lasso import train
from beta_lasso import validation
from beta_lasso import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, '
                               'TensorBoard events and results.json.')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Continue a workdir whose saved config differs from --config.')
_JAX_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', False,
    'Call jax.distributed.initialize() (multi-host TPU pods and GPU clusters).')
flags.mark_flags_as_required(['config', 'workdir'])

# Errors that are the user's to fix: one line, exit 1, no traceback.
_USER_ERRORS = (validation.ConfigError, input_pipeline.DatasetNotFoundError,
                workdir_lib.ConfigMismatchError, train.DivergenceError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if _JAX_DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info('JAX process %d / %d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  try:
    results = train.train_and_evaluate(
        _CONFIG.value, _WORKDIR.value,
        allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except _USER_ERRORS as e:
    sys.exit(f'error: {e}')
  if results.get('preempted'):
    print(f'Preempted at step {results["step"]}; checkpoint saved in '
          f'{_WORKDIR.value}. Run the same command to resume.')
    return
  print(f'test accuracy: {results["test_accuracy"]:.4f} '
        f'({results["steps"]} steps, {results["wall_seconds"]:.0f} s)')
  for layer, total in results['weights'].items():
    nnz = results['nnz'][layer]
    print(f'  {layer:>12}: {nnz:>12,} / {total:>12,} non-zero '
          f'({100 * nnz / total:.2f}%)')


if __name__ == '__main__':
  app.run(main)
