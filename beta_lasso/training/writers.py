"""Metrics and progress: clu's writers where TensorFlow is, JSON lines where not.

clu's summary writer (TensorBoard event files) and its ReportProgress import
TensorFlow, which accelerator hosts often lack. There, `create` falls back to
a writer of one JSON object per line in `WORKDIR/metrics.jsonl` and a progress
report of steps per second, with the same methods the training loop calls.

The writers keep the full record and write nothing to the log: the console
has the training loop's one line per eval and the progress report's line
once a minute.
"""

import contextlib
import json
import os
import time

from absl import logging

try:
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
except ImportError:  # No TensorFlow (clu's summary writer needs it).
  metric_writers = periodic_actions = None

METRICS_FILE = 'metrics.jsonl'


class JsonLinesWriter:
  """write_scalars / write_hparams / flush / close, into metrics.jsonl."""

  def __init__(self, workdir: str, just_logging: bool = False):
    self._path = None if just_logging else os.path.join(workdir, METRICS_FILE)
    if self._path:
      os.makedirs(workdir, exist_ok=True)

  def _write(self, record: dict):
    if self._path:
      with open(self._path, 'a') as f:
        f.write(json.dumps(record, sort_keys=True) + '\n')

  def write_scalars(self, step: int, scalars: dict):
    scalars = {k: float(v) for k, v in scalars.items()}
    self._write({'step': int(step), **scalars})

  def write_hparams(self, hparams: dict):
    self._write({'hparams': hparams})

  def flush(self):
    pass

  def close(self):
    pass


class ProgressLogger:
  """Steps per second and ETA in the log, once a minute, as ReportProgress."""

  def __init__(self, num_train_steps: int, writer, every_secs: float = 60.0):
    self._total = num_train_steps
    self._writer = writer
    self._every = every_secs
    self._last = None  # (time, step)

  def __call__(self, step: int):
    now = time.monotonic()
    if self._last is None:
      self._last = (now, step)
      return
    elapsed = now - self._last[0]
    if elapsed >= self._every or step == self._total:
      rate = (step - self._last[1]) / max(elapsed, 1e-9)
      eta = (self._total - step) / max(rate, 1e-9)
      logging.info(
          'Step %d of %d: %.1f steps/s, %.1f min left',
          step,
          self._total,
          rate,
          eta / 60,
      )
      self._writer.write_scalars(step, {'steps_per_sec': rate})
      self._last = (now, step)

  @contextlib.contextmanager
  def timed(self, name: str):  # pylint: disable=unused-argument
    """ReportProgress's block timer; here the blocks go untimed, unlogged."""
    yield


def create(workdir: str, num_train_steps: int, *, just_logging: bool):
  """(writer, report_progress) for a run in `workdir`."""
  if metric_writers is None:
    writer = JsonLinesWriter(workdir, just_logging)
    return writer, ProgressLogger(num_train_steps, writer)
  # clu's default writer would log every scalar too: with the locality
  # medians, a dozen keys a line. Process 0 writes the event files, the others
  # nothing.
  writer = metric_writers.AsyncMultiWriter(
      [] if just_logging else [metric_writers.SummaryWriter(workdir)]
  )
  return writer, periodic_actions.ReportProgress(
      num_train_steps=num_train_steps, writer=writer
  )
