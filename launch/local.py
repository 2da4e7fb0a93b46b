r"""Starts one run as N processes on this machine's CPU, as on N hosts.

  python -m launch.local --num_processes=2 --devices_per_process=2 -- \
      --config=configs/sconv.py:cpu --workdir=/tmp/sconv_2proc

Every process runs `python -m beta_lasso.main ARGS` with
`--coordinator_address=localhost:PORT --num_processes=N --process_id=I`, and
`--xla_force_host_platform_device_count` fake CPU devices of its own; JAX's CPU
collectives (gloo) join them into one run of N x devices_per_process devices.
This is the multi-host path of a TPU pod or a GPU cluster (per-process input,
global arrays, process 0 writing), exercised without one.

Process 0 prints to the terminal; the others to PROCESS_LOG_DIR/process_I.log.
Ctrl-C or SIGTERM reaches every process; when one fails the others are
stopped, so that none waits for ever on a collective. The exit status is the
first non-zero one.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import app
from absl import flags

from beta_lasso import errors


def free_port() -> int:
  """A TCP port of localhost that nothing listens on now."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def commands(
    main_args: Sequence[str],
    num_processes: int,
    port: int,
    python: str = sys.executable,
) -> list[list[str]]:
  """The argv of every process of the run."""
  return [
      [
          python,
          '-m',
          'beta_lasso.main',
          *main_args,
          f'--coordinator_address=localhost:{port}',
          f'--num_processes={num_processes}',
          f'--process_id={i}',
      ]
      for i in range(num_processes)
  ]


def environment(devices_per_process: int) -> dict[str, str]:
  """This environment, with the fake CPU devices of one process."""
  xla_flags = [
      f
      for f in os.environ.get('XLA_FLAGS', '').split()
      if not f.startswith('--xla_force_host_platform_device_count')
  ]
  xla_flags.append(
      f'--xla_force_host_platform_device_count={devices_per_process}'
  )
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=' '.join(xla_flags))


def run(
    main_args: Sequence[str],
    num_processes: int,
    devices_per_process: int,
    log_dir: str,
    timeout: float | None = None,
) -> int:
  """Runs the processes to the end; returns the first non-zero exit status.

  Args:
    main_args: beta_lasso.main's arguments (--config, --workdir, ...).
    num_processes: processes to start.
    devices_per_process: fake CPU devices of each.
    log_dir: where processes 1.. write process_I.log.
    timeout: seconds before every process is killed (status -9); None: none.
  """
  port = free_port()
  env = environment(devices_per_process)
  pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
  processes = []
  for i, argv in enumerate(commands(main_args, num_processes, port)):
    log = (
        None
        if i == 0
        else open(os.path.join(log_dir, f'process_{i}.log'), 'wb')
    )
    try:
      processes.append(
          subprocess.Popen(
              argv,
              env=env,
              stdout=log,
              stderr=subprocess.STDOUT if log else None,
          )
      )
    finally:
      if log:
        log.close()  # The child holds its own descriptor.

  def stop(signum=signal.SIGTERM, frame=None):
    del frame
    for p in processes:
      if p.poll() is None:
        p.send_signal(signum)

  previous = {
      sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
  }
  deadline = None if timeout is None else time.monotonic() + timeout
  status = 0
  try:
    while any(p.poll() is None for p in processes):
      failed = [p.returncode for p in processes if p.returncode]
      if failed and not status:
        status = failed[0]
        stop()  # The others would wait on a collective for ever.
      if deadline is not None and time.monotonic() > deadline:
        stop(signal.SIGKILL)
        status = status or -signal.SIGKILL
      time.sleep(0.1)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for p in processes:  # However we leave, no child outlives the launcher.
      if p.poll() is None:
        p.kill()
      p.wait()
  return status or next((p.returncode for p in processes if p.returncode), 0)


def _define_flags():
  """Flags, only when this module is the script (see launch/sweep.py)."""
  flags.DEFINE_integer('num_processes', 2, 'Processes of the run.')
  flags.DEFINE_integer(
      'devices_per_process', 1, 'Fake CPU devices of each process.'
  )
  flags.DEFINE_string(
      'process_log_dir',
      None,
      'Where processes 1.. log ' '(default: a new temporary folder).',
  )


def main(argv):
  args = flags.FLAGS
  if args.num_processes < 1 or args.devices_per_process < 1:
    sys.exit(
        f'error: --num_processes={args.num_processes} and '
        f'--devices_per_process={args.devices_per_process} must be >= 1'
    )
  log_dir = args.process_log_dir or tempfile.mkdtemp(prefix='beta_lasso_')
  status = run(argv[1:], args.num_processes, args.devices_per_process, log_dir)
  if status and args.num_processes > 1:
    print(
        f'exit {status}; the other processes logged to {log_dir}',
        file=sys.stderr,
    )
  sys.exit(status)


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
