r"""Fans a sweep out over cloud TPU VMs or GPU hosts, as SkyPilot managed jobs.

  python -m launch.cloud --sweep=launch/sweeps/table2.py \
      --workdir_root=gs://BUCKET/sweeps/table2 \
      --accelerator=tpu-v5litepod-8 --jobs=3 --dry_run

The sweep's runs are split into `--jobs` shards (run i goes to job i mod
jobs). Each job is one SkyPilot managed job (`sky jobs launch`) on one
`--accelerator` (a TPU VM, a pod slice such as tpu-v4-32, or a GPU host such
as H100:8) that runs its shard with `python -m launch.sweep --shard=I
--num_shards=N`. Workdirs are on a bucket, so a job that SkyPilot restarts
after a spot preemption skips its finished runs and resumes the unfinished
one from its checkpoints. When the jobs are done, `launch.sweep
--summary_only` (printed last) reads every run's results.json from the
bucket and writes WORKDIR_ROOT/summary.csv.

SkyPilot, not hand-written ssh loops or Cloud TPU queued resources: one task
file provisions TPU VMs, pod slices (running the command on every worker) and
GPU hosts on several clouds, and its managed jobs recover spot preemptions by
themselves; queued resources cover TPUs only and leave the restart to us.

Every job's task is a YAML file in `--task_dir` (written with PyYAML); its
`run` command is one argv list joined by `shlex.join`, so a value with spaces
or quotes stays one argument. `--dry_run` writes the task files and prints
every command, running none. Arguments after `--` go to every run, as for
launch.sweep; on TPU every run also gets `--jax_distributed`.
"""

import pathlib
import shlex
import subprocess
import sys
import tempfile
from typing import Sequence

from absl import app
from absl import flags
import yaml

from beta_lasso import errors
from launch import planning

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_RUNTIME = 'tpu-ubuntu2204-base'


def is_tpu(accelerator: str) -> bool:
  return accelerator.lower().startswith('tpu-')


def setup_command(accelerator: str) -> str:
  """Installs JAX for the accelerator, then this repository."""
  jax = 'jax[tpu]' if is_tpu(accelerator) else 'jax[cuda12]'
  return ' && '.join(
      [
          shlex.join(['python3', '-m', 'pip', 'install', '-U', jax]),
          shlex.join(
              [
                  'python3',
                  '-m',
                  'pip',
                  'install',
                  '-r',
                  'requirements.txt',
                  '-e',
                  '.',
              ]
          ),
      ]
  )


def job_argv(
    sweep: str,
    config_arg: str,
    workdir_root: str,
    shard: int,
    num_shards: int,
    extra_args: Sequence[str],
) -> list[str]:
  """The launch.sweep command of one job."""
  return [
      'python3',
      '-m',
      'launch.sweep',
      f'--sweep={sweep}',
      f'--config={config_arg}',
      f'--workdir_root={workdir_root}',
      f'--shard={shard}',
      f'--num_shards={num_shards}',
      '--',
      *extra_args,
  ]


def task(
    name: str, accelerator: str, run_argv: Sequence[str], *, spot: bool
) -> dict:
  """A SkyPilot task (the YAML's content) that runs `run_argv` once."""
  resources = {
      'accelerators': accelerator,
      'use_spot': spot,
      # Restart on another zone's capacity after a preemption.
      'job_recovery': 'FAILOVER',
  }
  if is_tpu(accelerator):
    resources['accelerator_args'] = {'runtime_version': TPU_RUNTIME}
  return {
      'name': name,
      'resources': resources,
      'workdir': str(REPO),
      'setup': setup_command(accelerator),
      'run': shlex.join(run_argv),
  }


def plan_jobs(
    runs: Sequence[planning.Run],
    sweep: str,
    config_arg: str,
    workdir_root: str,
    accelerator: str,
    num_jobs: int,
    extra_args: Sequence[str],
    name: str,
    spot: bool,
) -> list[dict]:
  """One SkyPilot task per non-empty shard of the sweep's runs."""
  num_jobs = min(num_jobs, len(runs))
  if is_tpu(accelerator) and '--jax_distributed' not in extra_args:
    # On a pod slice every worker's process joins the run; on one host it
    # is harmless.
    extra_args = [*extra_args, '--jax_distributed']
  return [
      task(
          f'{name}-{i + 1}-of-{num_jobs}',
          accelerator,
          job_argv(sweep, config_arg, workdir_root, i, num_jobs, extra_args),
          spot=spot,
      )
      for i in range(num_jobs)
  ]


def write_tasks(tasks: Sequence[dict], task_dir: str) -> list[str]:
  """Writes each task as TASK_DIR/NAME.yaml; returns the paths."""
  directory = pathlib.Path(task_dir)
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  for t in tasks:
    path = directory / f'{t["name"]}.yaml'
    path.write_text(yaml.safe_dump(t, sort_keys=False))
    paths.append(str(path))
  return paths


def launch_argv(name: str, task_path: str) -> list[str]:
  """`sky jobs launch` of one task, detached: every job starts at once."""
  return [
      'sky',
      'jobs',
      'launch',
      '--name',
      name,
      '--yes',
      '--detach-run',
      task_path,
  ]


def summary_argv(
    sweep: str, config_arg: str, workdir_root: str, extra_args: Sequence[str]
) -> list[str]:
  """The command that gathers every job's results into summary.csv."""
  return [
      sys.executable,
      '-m',
      'launch.sweep',
      f'--sweep={sweep}',
      f'--config={config_arg}',
      f'--workdir_root={workdir_root}',
      '--summary_only',
      '--',
      *extra_args,
  ]


def _define_flags():
  """Flags, only when this module is the script (see launch/sweep.py)."""
  flags.DEFINE_string('sweep', None, 'Sweep file, as for launch.sweep.')
  flags.DEFINE_string(
      'config',
      None,
      'Config of every run (default: the ' "sweep file's CONFIG).",
  )
  flags.DEFINE_string(
      'workdir_root',
      None,
      'A bucket path (gs://...), which ' 'every job reads and writes.',
  )
  flags.DEFINE_string(
      'accelerator',
      None,
      'SkyPilot accelerator of each job: '
      'tpu-v5litepod-8, tpu-v4-32, H100:8, ...',
  )
  flags.DEFINE_integer(
      'jobs',
      None,
      'Jobs (hosts or slices) the runs are '
      'split over (default: one per run).',
  )
  flags.DEFINE_bool(
      'spot',
      True,
      'Spot / preemptible capacity; SkyPilot ' 'restarts a preempted job.',
  )
  flags.DEFINE_string(
      'name', None, 'Job name prefix (default: from the ' 'sweep file).'
  )
  flags.DEFINE_string(
      'task_dir',
      None,
      'Where task YAMLs are written ' '(default: a new temporary folder).',
  )
  flags.DEFINE_bool(
      'dry_run',
      False,
      'Write the task files and print every ' 'command; run nothing.',
  )
  flags.mark_flags_as_required(['sweep', 'workdir_root', 'accelerator'])


def main(argv):
  args = flags.FLAGS
  extra_args = argv[1:]
  try:
    if '://' not in args.workdir_root:
      raise planning.SweepError(
          f'--workdir_root={args.workdir_root} must be a bucket (gs://...): '
          'every job writes there, and it outlives the VMs'
      )
    if args.jobs is not None and args.jobs < 1:
      raise planning.SweepError(f'--jobs={args.jobs} must be at least 1')
    config_arg, runs = planning.load_runs(
        args.sweep, args.config, args.workdir_root, extra_args
    )
  except errors.UserError as e:
    errors.exit_with(e)
  name = args.name or f'bl-{pathlib.Path(args.sweep).stem.replace("_", "-")}'
  tasks = plan_jobs(
      runs,
      args.sweep,
      config_arg,
      args.workdir_root,
      args.accelerator,
      args.jobs or len(runs),
      extra_args,
      name,
      args.spot,
  )
  paths = write_tasks(
      tasks, args.task_dir or tempfile.mkdtemp(prefix='beta_lasso_sky_')
  )
  commands = [launch_argv(t['name'], p) for t, p in zip(tasks, paths)]
  gather = summary_argv(args.sweep, config_arg, args.workdir_root, extra_args)
  print(
      f'{len(runs)} runs in {len(tasks)} jobs on {args.accelerator}; '
      f'tasks in {pathlib.Path(paths[0]).parent}'
  )
  for t, path in zip(tasks, paths):
    print(f'# {path}: {t["run"]}')
  for command in commands:
    print(shlex.join(command))
    if not args.dry_run:
      subprocess.run(command, check=True)
  print('# Watch the jobs, then gather the summary once they are done:')
  print(shlex.join(['sky', 'jobs', 'queue']))
  print(shlex.join(gather))


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
