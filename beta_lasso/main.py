"""Trains and evaluates a model of the paper.

  python -m beta_lasso.main --config=configs/sconv.py:cpu --workdir=/tmp/sconv

Any config field can be overridden on the command line, e.g.
`--config.alpha=16 --config.num_epochs=30`. Running the same command again
resumes from the workdir's latest checkpoint; SIGTERM or Ctrl-C saves a
checkpoint and exits, to be resumed the same way.
"""

import logging as pylogging
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from beta_lasso import errors
from beta_lasso import train
from beta_lasso.training import checkpointing
from beta_lasso.training import validation
from beta_lasso.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file.', lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    'workdir',
    None,
    'Directory for checkpoints, ' 'TensorBoard events and results.json.',
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change',
    False,
    'Continue a workdir whose saved config differs from --config.',
)
_JAX_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed',
    False,
    'Call jax.distributed.initialize(): on Cloud TPU (and SLURM) it finds the '
    'other processes by itself; elsewhere give the three flags below.',
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address',
    None,
    'host:port of process 0, for jax.distributed; implies --jax_distributed.',
)
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes of the run, for jax.distributed.'
)
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process, in [0, num_processes).'
)
flags.mark_flags_as_required(['config', 'workdir'])

# Errors that are the user's to fix: one line, exit 1, no traceback. OSError
# covers the file system's answers: a read-only folder, a full disk.
_USER_ERRORS = (errors.UserError, OSError)


class _ConsoleFilter(pylogging.Filter):
  """Keeps the console to our progress: warnings always pass.

  Orbax logs a dozen INFO lines per save; they are dropped. While `quiet` is
  set (the checks before a run) every INFO is dropped, so that a bad config
  prints its one error line and nothing else.
  """

  quiet = False

  def filter(self, record):
    if record.levelno >= pylogging.WARNING:
      return True
    if self.quiet:
      return False
    return not checkpointing.logged_by_orbax(record)


def _parse_flags(argv):
  """absl's flag parsing, but a bad flag or config file is one line."""
  try:
    argv = flags.FLAGS(argv)
    # ml_collections defers a missing config file's error to the first use.
    _CONFIG.value.keys()
    return argv
  except flags.Error as e:
    message = errors.one_line(e)
  except (AttributeError, KeyError) as e:
    # A ConfigDict's answer to a field it lacks (`--config.<name>`): the
    # message is the name, quoted.
    message = f'unknown config field {errors.one_line(e).strip(chr(34))}'
  except Exception as e:  # pylint: disable=broad-except
    # A config file that does not load; the end of the message says why.
    message = f'--config: {str(e).strip().splitlines()[-1].strip()}'
  sys.exit(f'error: {message} (see --helpfull)')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  console = _ConsoleFilter()
  logging.get_absl_handler().addFilter(console)
  if _JAX_DISTRIBUTED.value or _COORDINATOR_ADDRESS.value:
    # Unset flags (None) leave JAX to detect them (Cloud TPU, SLURM).
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR_ADDRESS.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
  try:
    # train_and_evaluate repeats these checks; run first with INFO hidden,
    # a mistake shows as a single line on the console.
    console.quiet = True
    validation.validate_config(_CONFIG.value)
    workdir_lib.check_config(
        _WORKDIR.value, _CONFIG.value, allow_change=_ALLOW_CONFIG_CHANGE.value
    )
    # One run per workdir, held until this process ends.
    with workdir_lib.lock(_WORKDIR.value):
      console.quiet = False
      logging.info(
          'JAX process %d / %d, devices: %s',
          jax.process_index(),
          jax.process_count(),
          jax.devices(),
      )
      results = train.train_and_evaluate(
          _CONFIG.value,
          _WORKDIR.value,
          allow_config_change=_ALLOW_CONFIG_CHANGE.value,
      )
  except _USER_ERRORS as e:
    errors.exit_with(e)
  if results.get('preempted'):
    print(
        f'Preempted at step {results["step"]}; checkpoint saved in '
        f'{_WORKDIR.value}. Run the same command to resume.'
    )
    return
  print(
      f'test accuracy: {results["test_accuracy"]:.4f} '
      f'({results["steps"]} steps, {results["wall_seconds"]:.0f} s)'
  )
  for layer, total in results['weights'].items():
    nnz = results['nnz'][layer]
    print(
        f'  {layer:>12}: {nnz:>12,} / {total:>12,} non-zero '
        f'({100 * nnz / total:.2f}%)'
    )


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
