r"""The paper's runs as one queue, run window by window on a lent accelerator.

  python -m launch.paper --workdir_root=/tmp/paper --out=$OUT/paper \
      --budget=540 [--resume_from=results/paper] \
      [-- --config.data_file=.carry/cifar10_jpeg.npz]

The queue, in this order, each row with its paper config and the paper's
recipe on top (Fast AutoAugment then Cutout, the 45k/5k validation split with
best-validation selection, batch 512, cosine from 0.1, bfloat16 compute with
float32 weights, the device loop):

1. Table 2, beta-LASSO beta 50, S-FC alpha 150, 4000 epochs (85.19);
2. Table 1's 400-epoch CIFAR-10 column: S-CONV, S-LOCAL, S-FC, 3-FC, D-CONV,
   D-LOCAL, D-FC;
3. Table 2's beta 0 and beta 1 rows and Table 1's 4000-epoch S-FC SGD row.

Given `--budget` seconds of wall clock, it takes the rows in order and runs
each that fits: a beta-LASSO run always (it stops at the budget with a
checkpoint and goes on in the next window from its compact copy, a few
megabytes: `beta_lasso.compact`); a dense run only when its estimated time
fits in what is left, since its momentum cannot travel: the estimate is
`--startup_seconds` plus its steps at the rate measured in an earlier window,
else the one given by `--steps_per_second`, else `STEPS_PER_SECOND`; a row
without any rate is not started. At the budget the running run is sent
SIGTERM and checkpoints (launch.sweep's deadline).

Then it packs into `--out` what must come back from a machine whose disk is
gone afterwards, at most `--max_files` (8) files of at most 16 MiB:

- `campaign.json`: every row's status, paper accuracy, command, results.json
  and config.json of each finished run, the measured rates, and one record
  per window;
- `figures.tar`: the first-layer filters of each finished run
  (`<row>/fig4_filters.png`, what the report shows for a stored run);
- `compact_<row>/`: the compact copy of an unfinished beta-LASSO run
  (`compact.json`, `arrays-NNN.npz`); left out, and the command fails, when
  it would take the folder over the file limit.

The data file's path is part of each run's config: give every window the
same one (relative to the repository root, as above).

The next window, on a fresh machine, gets these files back with
`--resume_from=DIR` (e.g. results/paper/ in the repository): finished rows
are kept, the unfinished beta-LASSO run is restored into its workdir and
carried on, and the new `--out` holds everything so far. `--unpack=DIR`
writes the finished runs as stored runs (`DIR/<row>/results.json`,
`config.json`, `fig4_filters.png`) for `beta_lasso.report`.

For a CPU: `--alpha`, `--width` (3-FC), `--epochs`, `--eval_every_epochs`,
`--only=ROW,...` shrink the runs, and arguments after `--` go to every run,
e.g. `-- --config.data_file=small.npz --config.batch_size=128`.
"""

import copy
import dataclasses
import pathlib
import subprocess
import tempfile
import time
from typing import Any
from typing import Sequence

from absl import app
from absl import flags

from beta_lasso import compact
from beta_lasso import errors
from beta_lasso import models
from beta_lasso import train
from beta_lasso.data import data_file
from beta_lasso.report import filters as filters_lib
from beta_lasso.training import loading
from launch import packing
from launch import planning
from launch import recipe as recipe_lib
from launch import sweep as sweep_lib


@dataclasses.dataclass(frozen=True)
class Row:
  """One run of the paper."""

  name: str
  table: str
  config: str  # file.py[:arg], as beta_lasso.main's --config.
  model: str
  optimizer: str  # As the report labels it: 'SGD', 'β-LASSO β=50'.
  epochs: int
  overrides: tuple = ()  # (field, value) pairs on top of the config.

  @property
  def paper(self) -> float:
    """The paper's CIFAR-10 test accuracy for this row, in percent."""
    return models.spec(self.model).paper_cifar10[self.optimizer][self.epochs]


QUEUE = (
    Row(
        'table2_beta50',
        'Table 2, beta-LASSO beta 50',
        'configs/sfc_beta_lasso.py',
        'sfc',
        'β-LASSO β=50',
        4000,
    ),
    Row(
        'table1_sconv',
        'Table 1, S-CONV, 400 epochs',
        'configs/sconv.py:400',
        'sconv',
        'SGD',
        400,
    ),
    Row(
        'table1_slocal',
        'Table 1, S-LOCAL, 400 epochs',
        'configs/slocal.py:400',
        'slocal',
        'SGD',
        400,
    ),
    Row(
        'table1_sfc',
        'Table 1, S-FC, 400 epochs',
        'configs/sfc.py:400',
        'sfc',
        'SGD',
        400,
    ),
    Row(
        'table1_3fc',
        'Table 1, 3-FC, 400 epochs',
        'configs/3fc.py:400',
        '3fc',
        'SGD',
        400,
    ),
    Row(
        'table1_dconv',
        'Table 1, D-CONV, 400 epochs',
        'configs/dconv.py:400',
        'dconv',
        'SGD',
        400,
    ),
    Row(
        'table1_dlocal',
        'Table 1, D-LOCAL, 400 epochs',
        'configs/dlocal.py:400',
        'dlocal',
        'SGD',
        400,
    ),
    Row(
        'table1_dfc',
        'Table 1, D-FC, 400 epochs',
        'configs/dfc.py:400',
        'dfc',
        'SGD',
        400,
    ),
    Row(
        'table2_beta0',
        'Table 2, beta-LASSO beta 0',
        'configs/sfc_beta_lasso.py',
        'sfc',
        'β-LASSO β=0',
        4000,
        (('beta', 0.0),),
    ),
    Row(
        'table2_beta1',
        'Table 2, beta-LASSO beta 1',
        'configs/sfc_beta_lasso.py',
        'sfc',
        'β-LASSO β=1',
        4000,
        (('beta', 1.0),),
    ),
    Row(
        'table2_sgd',
        'Table 1, S-FC SGD, 4000 epochs',
        'configs/sfc.py:4000',
        'sfc',
        'SGD',
        4000,
    ),
)

# Steps per second of a whole run on one H200, evals included, from
# BENCHMARKS.md's full-size S-FC measurement (training 3.3 ms a step, 0.29 s
# an epoch of 87 steps; about 4 s an eval): Table 2 (an eval every 50 epochs)
# 348,000 steps in about 1,480 s; Table 1's 400 epochs (an eval every 10) in
# about 0.69 s an epoch. 3-FC and D-FC have as many weights as S-FC (256M and
# 282M) and are given its rate, D-FC less a tenth. The conv and local rows
# are not measured: give them with --steps_per_second (benchmarks.train_step
# measures a step). A row's own measured rate replaces these once it has run.
STEPS_PER_SECOND = {
    'table2_beta50': 230.0,
    'table2_beta0': 230.0,
    'table2_beta1': 230.0,
    'table2_sgd': 230.0,
    'table1_sfc': 120.0,
    'table1_3fc': 120.0,
    'table1_dfc': 108.0,
}


CampaignError = packing.CampaignError


# ----------------------------------------------------------------------------
# The queue as runs.
# ----------------------------------------------------------------------------
def plan(
    workdir_root: str,
    rows: Sequence[Row],
    *,
    recipe_overrides: dict,
    alpha: int | None = None,
    width: int | None = None,
    epochs: float | None = None,
    eval_every_epochs: float | None = None,
) -> list[tuple[Row, planning.Run, Any]]:
  """(row, run, config) of each row, every override checked against its config.

  Every run checkpoints each tenth of its budget (and at its best validation
  steps); beta-LASSO runs also write their compact copy then.

  Raises:
    planning.SweepError: an override that a config rejects.
  """
  root = workdir_root.rstrip('/')
  planned = []
  for row in rows:
    config = planning.load_config(row.config)
    overrides = dict(recipe_overrides)
    overrides.update(row.overrides)
    if config.model == '3fc':
      if width is not None:
        overrides['model_kwargs.width'] = width
    elif alpha is not None:
      overrides['alpha'] = alpha
    num_epochs = epochs if epochs is not None else config.num_epochs
    if epochs is not None:
      overrides['num_epochs'] = float(epochs)
    if eval_every_epochs is not None:
      overrides['eval_every_epochs'] = float(eval_every_epochs)
    overrides['checkpoint_every_epochs'] = num_epochs / 10
    if compact.compactable(config):
      overrides['compact_dir'] = f'{root}/{row.name}.compact'
    cast = planning.apply_overrides(config, overrides)
    planned.append(
        (
            row,
            planning.Run(
                name=row.name, overrides=cast, workdir=f'{root}/{row.name}'
            ),
            config,
        )
    )
  return planned


def resolved_config(config, run: planning.Run, extra_args: Sequence[str]):
  """`config` with the run's overrides and the extra `--config.F=V` applied."""
  config = copy.deepcopy(config)
  values = dict(run.overrides)
  for arg in extra_args:
    if arg.startswith('--config.') and '=' in arg:
      key, value = arg[len('--config.') :].split('=', 1)
      values[key] = _parse(value)
  for key, value in values.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = None if value == '' else value
  return config


def _parse(value: str):
  """A command-line value as config_flags reads it, for the fields used here."""
  for cast in (int, float):
    try:
      return cast(value)
    except ValueError:
      pass
  if value.lower() in ('true', 'false'):
    return value.lower() == 'true'
  return value


def num_steps(config) -> int:
  """Training steps, as train.py counts them, from the training split's size."""
  name, part = data_file.parse_split(config.train_split)
  if config.get('data_file'):
    total = data_file.split_size(config.data_file, name)
  else:  # CIFAR's, without opening TFDS.
    total = {'train': 50_000, 'test': 10_000}[name]
  size = len(range(*part.indices(total)))
  return train.Durations.of(config, size).num_train_steps


# ----------------------------------------------------------------------------
# One window.
# ----------------------------------------------------------------------------
def estimate_seconds(
    row: Row,
    steps_left: int,
    campaign: dict,
    given: dict[str, float],
    startup: float,
) -> float | None:
  """Seconds the row needs to finish, or None when no rate is known."""
  rate = (
      campaign['runs'].get(row.name, {}).get('steps_per_second')
      or given.get(row.name)
      or STEPS_PER_SECOND.get(row.name)
  )
  if not rate:
    return None
  return startup + steps_left / rate


def run_window(
    planned,
    extra_args: Sequence[str],
    campaign: dict,
    *,
    deadline: float,
    given_rates: dict[str, float],
    startup_seconds: float,
    only: Sequence[str] = (),
) -> dict[str, str]:
  """Runs the rows that fit before `deadline`, in queue order.

  Rows outside `only` (when given) are kept as they are, not run.

  Returns:
    Row name -> what happened this window.
  """

  outcomes = {}
  for row, run, config in planned:
    entry = campaign['runs'].get(row.name, {})
    if only and row.name not in only:
      continue
    if entry.get('status') == 'finished':
      outcomes[row.name] = 'finished before'
      continue
    left = deadline - time.time()
    steps = num_steps(resolved_config(config, run, extra_args))
    done = (loading.checkpoint_steps(run.workdir) or [0])[-1]
    if not compact.compactable(config):
      # Its momentum cannot travel: a run that cannot finish is lost work.
      need = estimate_seconds(
          row, steps - done, campaign, given_rates, startup_seconds
      )
      if need is None:
        outcomes[row.name] = 'not started: no steps/s known'
        print(
            f'{row.name}: not started, no steps/s known (give '
            '--steps_per_second)',
            flush=True,
        )
        continue
      if need > left:
        outcomes[row.name] = (
            f'not started: needs about {need:.0f} s, '
            f'{max(left, 0):.0f} s left'
        )
        print(f'{row.name}: {outcomes[row.name]}', flush=True)
        continue
    elif left < startup_seconds:
      outcomes[row.name] = f'not started: {max(left, 0):.0f} s left'
      print(f'{row.name}: {outcomes[row.name]}', flush=True)
      break
    status = sweep_lib.execute(
        [run], row.config, extra_args, deadline=deadline
    )[row.name]
    outcomes[row.name] = status
    campaign['runs'][row.name] = packing.record(
        row, run, row.config, status, extra_args, entry
    )
    if status != 'done':
      break  # Stopped at the budget (or failed): the window is over.
  for row, run, _ in planned:  # Rows this window did not reach.
    if row.name not in campaign['runs']:
      campaign['runs'][row.name] = packing.record(
          row,
          run,
          row.config,
          outcomes.get(row.name, 'not started'),
          extra_args,
          {},
      )
  return outcomes


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------
def draw_filters(planned, campaign: dict, figures: dict[str, bytes]):
  """Adds Figure 4 of each finished row not yet drawn to `figures`.

  Drawn from the run's newest checkpoint, as '<row>/fig4_filters.png', the
  file a stored run keeps for `beta_lasso.report`.
  """
  with tempfile.TemporaryDirectory() as folder:
    for row, run, config in planned:
      entry = campaign['runs'].get(row.name, {})
      name = f'{row.name}/{filters_lib.ARCHIVED_FILE}'
      if (
          entry.get('status') == 'finished'
          and name not in figures
          and loading.checkpoint_steps(run.workdir)
          and filters_lib.first_layer_name(config.model) is not None
      ):
        path = pathlib.Path(folder) / f'{row.name}.png'
        filters_lib.plot_workdir_filters(
            run.workdir, path, num_filters=16, columns=8
        )
        figures[name] = path.read_bytes()


def _define_flags():
  """Defined only when this module is the script (see launch/sweep.py)."""
  flags.DEFINE_string(
      'workdir_root', None, 'Each row trains in ' 'WORKDIR_ROOT/<row>.'
  )
  flags.DEFINE_string('out', None, 'Folder for the packed files.')
  flags.DEFINE_string(
      'resume_from',
      None,
      'Packed files of an earlier window '
      '(e.g. results/paper) to carry on from.',
  )
  flags.DEFINE_bool(
      'table',
      False,
      "Run nothing: print RESULTS.md's table of --resume_from's files (of "
      'the queue alone without them).',
  )
  flags.DEFINE_string(
      'unpack',
      None,
      'Run nothing: write the finished rows of '
      '--resume_from as stored runs into this folder.',
  )
  flags.DEFINE_float(
      'budget', 540, 'Wall-clock seconds of this window, packing included.'
  )
  flags.DEFINE_integer(
      'max_files',
      packing.MAX_FILES,
      'Most files packed (the '
      'device hands back 8 under $OUT: one fewer leaves '
      'room for a log).',
  )
  flags.DEFINE_float('pack_seconds', 30, 'Seconds kept at the end to pack.')
  flags.DEFINE_float(
      'startup_seconds',
      60,
      'Seconds a run spends before its '
      'first step (imports, data, compiling), for the plan.',
  )
  flags.DEFINE_list(
      'steps_per_second',
      [],
      'ROW=RATE,... rates for rows not '
      'measured yet (a measured rate takes precedence).',
  )
  flags.DEFINE_list('only', [], 'Rows to run (default: the whole queue).')
  flags.DEFINE_integer(
      'alpha', None, 'Width of every alpha model (a CPU test).'
  )
  flags.DEFINE_integer('width', None, "3-FC's hidden units (a CPU test).")
  flags.DEFINE_float('epochs', None, 'Epochs of every row (a CPU test).')
  flags.DEFINE_float('eval_every_epochs', None, 'Epochs between evals.')
  flags.DEFINE_string(
      'augment',
      'fast_autoaugment',
      "The recipe's " 'augmentation (the paper: fast_autoaugment).',
  )
  flags.DEFINE_bool(
      'half_precision',
      True,
      'bfloat16 compute, float32 ' "weights (the paper's recipe).",
  )


def _rates(values: Sequence[str]) -> dict[str, float]:
  rates = {}
  for value in values:
    name, _, rate = value.partition('=')
    try:
      rates[name] = float(rate)
    except ValueError:
      raise CampaignError(
          f'--steps_per_second: {value!r} is not ROW=RATE'
      ) from None
  return rates


def main(argv):
  args = flags.FLAGS
  extra_args = argv[1:]  # Everything after `--`.
  start = time.time()
  # What this process computes (restoring and packing compact copies) stays on
  # the CPU: on a GPU it would take the memory the runs need.
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update('jax_platforms', 'cpu')
  if args.table:
    print(
        packing.results_table(
            packing.read_campaign(args.resume_from)
            if args.resume_from
            else packing.empty_campaign()
        )
    )
    return
  if args.unpack:
    if not args.resume_from:
      raise CampaignError('--unpack needs --resume_from')
    for folder in packing.unpack(args.resume_from, args.unpack):
      print(folder)
    return
  if not args.workdir_root or not args.out:
    raise CampaignError('give --workdir_root and --out')
  names = [row.name for row in QUEUE]
  unknown = sorted(set(args.only) - set(names))
  if unknown:
    raise CampaignError(
        f'--only: unknown rows {", ".join(unknown)}; the '
        f'queue: {", ".join(names)}'
    )
  rates = _rates(args.steps_per_second)
  # Every row, so that what an earlier window packed of rows not run now
  # travels on; --only picks the rows to run.
  planned = plan(
      args.workdir_root,
      QUEUE,
      recipe_overrides=recipe_lib.recipe(args.augment, args.half_precision),
      alpha=args.alpha,
      width=args.width,
      epochs=args.epochs,
      eval_every_epochs=args.eval_every_epochs,
  )
  for row, run, config in planned:
    planning.check_extra_args(config, extra_args, set(run.overrides))
  campaign = packing.empty_campaign()
  figures = {}
  if args.resume_from:
    figures = packing.resume(args.resume_from, planned, campaign)
  deadline = start + args.budget - args.pack_seconds
  outcomes = run_window(
      planned,
      extra_args,
      campaign,
      deadline=deadline,
      given_rates=rates,
      startup_seconds=args.startup_seconds,
      only=args.only,
  )
  campaign['windows'].append(
      {
          'started': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(start)),
          'budget': args.budget,
          'seconds': time.time() - start,
          'device': _device(),
          'outcomes': outcomes,
      }
  )
  draw_filters(planned, campaign, figures)
  files = packing.pack(args.out, planned, campaign, figures, args.max_files)
  for row, _, _ in planned:
    if args.only and row.name not in args.only:
      continue
    entry = campaign['runs'][row.name]
    results = entry.get('results', {})
    shown = ''
    if 'test_accuracy' in results:
      # The paper reports the test accuracy at the best validation step.
      best = results.get('test_accuracy_at_best_val')
      shown = (
          f', test accuracy {100 * results["test_accuracy"]:.2f} final'
          + (
              f', {100 * best:.2f} at best validation'
              if best is not None
              else ''
          )
          + f' (paper {row.paper})'
      )
    print(f'{row.name}: {entry["status"]}{shown}', flush=True)
  total = sum(f.stat().st_size for f in files)
  print(
      f'Packed {len(files)} files, {total / 2**20:.2f} MiB, in {args.out}; '
      f'window {time.time() - start:.0f} s of {args.budget:g}',
      flush=True,
  )


def _device() -> str:
  """The GPU the runs used (nvidia-smi, no framework started), else 'cpu'."""
  try:
    names = subprocess.run(
        ['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
  except (subprocess.SubprocessError, OSError):
    return 'cpu'
  return ', '.join(n.strip() for n in names.splitlines() if n.strip()) or 'cpu'


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
