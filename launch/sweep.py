r"""Runs a sweep: one `beta_lasso.main` run per set of config overrides.

  python -m launch.sweep --sweep=launch/sweeps/table2.py \
      --config=configs/sfc_beta_lasso.py:cpu --workdir_root=/tmp/sweeps/table2

A sweep file defines `sweep(add)` and calls `add(**overrides)` once per run,
with config field names as keys (`add(beta=50.0)`; dotted names through a dict,
`add(**{'model_kwargs.kernel_size': 7})`). It may also set `CONFIG`, the config
it is written for, which `--config` then defaults to.

Each run trains in `WORKDIR_ROOT/NAME`, NAME built from its overrides (e.g.
`l1=5e-06,l1_conv=2e-05`), with

  python -m beta_lasso.main --config=CONFIG --workdir=WORKDIR_ROOT/NAME \
      --config.l1=5e-06 --config.l1_conv=2e-05 [EXTRA...]

where EXTRA are the arguments after `--` (e.g. `-- --jax_distributed` on a
multi-host TPU slice, `-- --config.dataset=cifar100` for every run). Runs whose
workdir has a readable results.json are skipped, so running the same sweep again
resumes it; an unfinished run resumes from its own checkpoints. A failed run is
reported and the sweep goes on; the exit status is 1 if any run did not finish.
`--time_limit=SECONDS` stops the sweep after that long as Ctrl-C does (the
running runs checkpoint), for hosts lent for a fixed time.
At the end a table of test accuracy and non-zero weights is printed and written
to `WORKDIR_ROOT/summary.csv`.

Every override is checked against the config before anything runs, so a typo
fails in a second with one line naming the field and the valid ones.
"""

import collections
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import Sequence

from absl import app
from absl import flags

from beta_lasso import errors
from launch import planning
from launch import summary

LOG_FILE = 'sweep.log'


# ----------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------
def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


def _last_line(path: pathlib.Path) -> str:
  try:
    lines = path.read_text(errors='replace').strip().splitlines()
  except OSError:
    return ''
  return lines[-1] if lines else ''


class _Stopper:
  """Turns SIGINT/SIGTERM/SIGHUP into: start nothing more, and tell the runs.

  Runs are started in their own session, so Ctrl-C (or a dropped ssh
  connection) reaches only the sweep, which passes on one SIGTERM per signal:
  beta_lasso.main checkpoints and exits on the first, stops at once on the
  second. No run outlives the sweep to collide with the next one in its workdir.
  """

  def __init__(self):
    self.signals = 0
    self._sent = {}  # Popen -> SIGTERMs sent to it.
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    # Only counted here: the loop passes the signal on, so that no run is
    # missed or signalled twice while it is being started or reaped.
    del signum, frame
    self.signals += 1

  def forward(self, processes):
    """Sends each running process the SIGTERMs it has not had yet."""
    for process in processes:
      while (
          self._sent.get(process, 0) < self.signals and process.poll() is None
      ):
        process.send_signal(signal.SIGTERM)
        self._sent[process] = self._sent.get(process, 0) + 1


def _finished(run: planning.Run) -> bool:
  """Whether the run wrote readable results; an unreadable file runs again."""
  results = summary.read_results(run.workdir)
  return results is not None and not results.get('unreadable')


def execute(
    runs: Sequence[planning.Run],
    config_arg: str,
    extra_args: Sequence[str],
    parallel: int = 1,
    deadline: float | None = None,
) -> dict[str, str]:
  """Runs every run without results.json, `parallel` at a time.

  Args:
    runs: the sweep's runs.
    config_arg: --config of every run.
    extra_args: appended to every command.
    parallel: runs at once. 1 shows each run's output on the terminal; above 1
      each run's output is appended to WORKDIR/sweep.log.
    deadline: a `time.time()` at which to stop as if signalled: the running
      runs checkpoint and exit, no more start; the same call resumes them.

  Returns:
    Run name -> 'done', 'skipped' (finished before), 'failed (exit N)',
    'stopped' (exited cleanly without results, e.g. preempted) or 'not started'.
  """
  statuses = {}
  todo = collections.deque()
  n = len(runs)
  for i, run in enumerate(runs, 1):
    if _finished(run):
      statuses[run.name] = 'skipped'
      print(f'[{i}/{n}] {run.name}: finished before, skipped', flush=True)
    else:
      todo.append((i, run))
  start = time.time()
  running = {}  # Popen -> (index, run, start time, log path or None).
  stopping = False
  with _Stopper() as stopper:
    while todo or running:
      if deadline is not None and time.time() >= deadline and not stopping:
        print('Time limit reached', flush=True)
        stopper.signals = max(stopper.signals, 1)
      while todo and len(running) < parallel and not stopper.signals:
        i, run = todo.popleft()
        log = None
        if parallel > 1:
          log = pathlib.Path(run.workdir) / LOG_FILE
          log.parent.mkdir(parents=True, exist_ok=True)
        output = log.open('ab') if log else None
        try:
          process = subprocess.Popen(
              planning.command(
                  config_arg,
                  run.workdir,
                  run.overrides,
                  extra_args,
                  python=sys.executable,
              ),
              stdout=output,
              stderr=subprocess.STDOUT if log else None,
              start_new_session=True,
          )
        finally:
          if output:
            output.close()  # The child holds its own descriptor.
        running[process] = (i, run, time.time(), log)
        where = f' (log: {log})' if log else ''
        print(f'[{i}/{n}] {run.name}: started{where}', flush=True)
      stopper.forward(running)
      if stopper.signals and not stopping:
        stopping = True
        print(
            f'Stopping: {len(running)} running asked to checkpoint and '
            f'stop, {len(todo)} not started',
            flush=True,
        )
        for _, run in todo:
          statuses[run.name] = 'not started'
        todo.clear()
      finished = [p for p in running if p.poll() is not None]
      if not finished:
        time.sleep(0.5)
        continue
      for process in finished:
        i, run, run_start, log = running.pop(process)
        if process.returncode != 0:
          status = f'failed (exit {process.returncode})'
        elif not _finished(run):
          status = 'stopped'
        else:
          status = 'done'
        statuses[run.name] = status
        detail = ''
        if log and status.startswith('failed'):
          detail = f': {_last_line(log)} (log: {log})'
        print(
            f'[{i}/{n}] {run.name}: {status} in '
            f'{_clock(time.time() - run_start)} (sweep '
            f'{_clock(time.time() - start)}){detail}',
            flush=True,
        )
  return statuses


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------
def _define_flags():
  """The command line's flags, defined only when this module is the script.

  Defined at import, they would clash with other modules' flags of the same
  name (beta_lasso.main's --config) in any process that imports both, e.g.
  pytest.
  """
  flags.DEFINE_string(
      'sweep', None, 'Sweep file: a Python file that defines sweep(add).'
  )
  flags.DEFINE_string(
      'config',
      None,
      'Config file[:arg] of every run, as for beta_lasso.main '
      "(default: the sweep file's CONFIG).",
  )
  flags.DEFINE_string(
      'workdir_root',
      None,
      'Each run trains in WORKDIR_ROOT/NAME (local or gs://).',
  )
  flags.DEFINE_bool(
      'dry_run', False, 'Print the command of every run and exit.'
  )
  flags.DEFINE_integer(
      'parallel',
      1,
      'Runs at once. Above 1 each run logs to WORKDIR/sweep.log '
      'instead of the terminal.',
  )
  flags.DEFINE_float(
      'time_limit',
      0,
      'Seconds after which the running runs checkpoint and '
      'stop and no more start (0: none); the same command resumes them.',
  )
  flags.DEFINE_integer(
      'shard',
      0,
      'With --num_shards: run only runs shard, shard + num_shards, '
      '... (one job of a sweep fanned out by launch.cloud).',
  )
  flags.DEFINE_integer('num_shards', 1, 'Jobs the sweep is split into.')
  flags.DEFINE_bool(
      'summary_only',
      False,
      'Run nothing: print the table of what has '
      'finished and write summary.csv.',
  )
  flags.mark_flags_as_required(['sweep', 'workdir_root'])


def main(argv):
  args = flags.FLAGS
  extra_args = argv[1:]  # Everything after `--`.
  try:
    config_arg, runs = planning.load_runs(
        args.sweep, args.config, args.workdir_root, extra_args
    )
    if args.time_limit < 0:
      raise planning.SweepError(
          f'--time_limit={args.time_limit:g} must be positive (or 0: none)'
      )
    if not 0 <= args.shard < args.num_shards:
      raise planning.SweepError(
          f'--shard={args.shard} is not in [0, '
          f'--num_shards={args.num_shards})'
      )
    all_runs, runs = runs, runs[args.shard :: args.num_shards]
    if args.parallel < 1:
      raise planning.SweepError(
          f'--parallel={args.parallel} must be at least 1'
      )
    if args.parallel > 1 and '://' in args.workdir_root:
      raise planning.SweepError(
          '--parallel above 1 writes logs beside each run, so '
          '--workdir_root must be a local directory'
      )
  except errors.UserError as e:
    errors.exit_with(e)

  if args.dry_run:
    for run in runs:
      print(
          shlex.join(
              planning.command(
                  config_arg, run.workdir, run.overrides, extra_args
              )
          )
      )
    return
  statuses = {}
  if not args.summary_only:
    print(
        f'Sweep {args.sweep}: {len(runs)} runs of {config_arg} in '
        f'{args.workdir_root}',
        flush=True,
    )
    deadline = time.time() + args.time_limit if args.time_limit > 0 else None
    statuses = execute(runs, config_arg, extra_args, args.parallel, deadline)
  rows = summary.summarize(runs, statuses)
  print()
  print(summary.format_table(rows))
  if len(runs) == len(all_runs):
    # One job's shard leaves summary.csv, the whole sweep's, to --summary_only.
    print(f'\nSummary: {summary.write_summary(rows, args.workdir_root)}')
  unfinished = [row['name'] for row in rows if row['status'] != 'finished']
  failed = [row['name'] for row in rows if row['status'].startswith('failed')]
  if failed:
    print(f'{len(failed)} failed: {", ".join(failed)}')
  if unfinished and not args.summary_only:
    sys.exit(
        f'{len(unfinished)} of {len(rows)} runs have no results; the '
        'same command runs only those (unfinished ones resume)'
    )


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
