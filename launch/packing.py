"""What travels between a campaign's windows: the packed files.

`launch.paper` packs into at most `MAX_FILES` files of at most
`MAX_FILE_BYTES`: `campaign.json` (every row's status, command, results and
config, the measured rates, one record per window), `figures.tar` (each
finished run's first-layer filters) and the compact copy of an unfinished
beta-LASSO run; the next window resumes from them, and `unpack` writes the
finished rows as stored runs for `beta_lasso.report`.
"""

import io
import json
import pathlib
import shlex
import shutil
import tarfile
from typing import Any
from typing import Sequence

from beta_lasso import compact
from beta_lasso import errors
from beta_lasso.training import loading
from beta_lasso.training import workdir as workdir_lib
from launch import planning

FORMAT = 'launch.paper/1'
CAMPAIGN_FILE = 'campaign.json'
FIGURES_FILE = 'figures.tar'
COMPACT_PREFIX = 'compact_'
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20


class CampaignError(errors.UserError, ValueError):
  """A campaign that cannot run as asked; the message is one line."""


# ----------------------------------------------------------------------------
# What travels between windows.
# ----------------------------------------------------------------------------
def empty_campaign() -> dict:
  return {'format': FORMAT, 'runs': {}, 'windows': []}


def read_campaign(directory) -> dict:
  """campaign.json of a folder of packed files ({} runs when there is none).

  Raises:
    CampaignError: the file is not a campaign's.
  """
  path = pathlib.Path(directory) / CAMPAIGN_FILE
  if not path.exists():
    raise CampaignError(
        f'{directory} holds no {CAMPAIGN_FILE}: not the '
        'packed files of a campaign'
    )
  campaign = json.loads(path.read_text())
  if campaign.get('format') != FORMAT:
    raise CampaignError(
        f'{path} is format {campaign.get("format")!r}, not ' f'{FORMAT!r}'
    )
  return campaign


def _read_figures(directory) -> dict[str, bytes]:
  path = pathlib.Path(directory) / FIGURES_FILE
  if not path.exists():
    return {}
  with tarfile.open(path) as tar:
    return {
        m.name: tar.extractfile(m).read()
        for m in tar.getmembers()
        if m.isfile()
    }


def resume(directory, planned, campaign: dict) -> dict[str, bytes]:
  """Carries the packed files of an earlier window into this one.

  Finished rows stay in `campaign`; the compact copy of an unfinished
  beta-LASSO run becomes its workdir, unless that workdir already has
  checkpoints (the same machine, a later command).

  Returns:
    The figures packed so far, by name in figures.tar.
  """

  earlier = read_campaign(directory)
  campaign['runs'].update(earlier['runs'])
  campaign['windows'] = earlier['windows']
  for row, run, _ in planned:
    copy = pathlib.Path(directory) / f'{COMPACT_PREFIX}{row.name}'
    if (
        campaign['runs'].get(row.name, {}).get('status') == 'finished'
        or not copy.is_dir()
    ):
      continue
    if (pathlib.Path(run.workdir) / workdir_lib.CHECKPOINTS_DIR).is_dir():
      print(
          f'{row.name}: {run.workdir} has checkpoints; {copy} not restored',
          flush=True,
      )
      continue
    manifest = compact.restore(copy, run.workdir)
    print(
        f'{row.name}: restored from {copy} at {compact.describe(manifest)}',
        flush=True,
    )
  return _read_figures(directory)


def record(
    row: Any,  # A `paper.Row`.
    run: planning.Run,
    config_file: str,
    status: str,
    extra_args: Sequence[str],
    earlier: dict,
) -> dict:
  """campaign.json's entry of a row, from its workdir (if any) and `earlier`."""

  entry = dict(earlier)
  entry.update(
      {
          'table': row.table,
          'paper': row.paper,
          'config': config_file,
          'overrides': run.overrides,
          'status': status,
          'command': shlex.join(
              planning.command(
                  config_file, run.workdir, run.overrides, extra_args
              )
          ),
      }
  )
  workdir = pathlib.Path(run.workdir)
  if (workdir / workdir_lib.CONFIG_FILE).exists():
    entry['config_json'] = json.loads(
        (workdir / workdir_lib.CONFIG_FILE).read_text()
    )
  steps = loading.checkpoint_steps(run.workdir)
  if steps:
    entry['step'] = steps[-1]
  try:
    results = loading.load_results(run.workdir)
  except FileNotFoundError:
    return entry
  history = results.get('history') or []
  if history and history[-1].get('wall_seconds'):
    last = history[-1]
    # The whole run's pace, compiling and evals included, is what a window's
    # plan needs.
    entry['steps_per_second'] = last['step'] / last['wall_seconds']
  if 'steps' in results:
    results.pop('workdir', None)
    entry['results'] = results
    entry['status'] = 'finished'
  return entry


def results_table(campaign: dict, rows: Sequence[Any]) -> str:
  """RESULTS.md's table: each row of the queue (`paper.Row`s), the paper's
  and ours.

  Ours is the test accuracy at the best validation step (what the paper
  reports) and the final one, from the row's finished run in `campaign`;
  a row not finished says how far it got.
  """
  windows = campaign.get('windows', [])
  devices = sorted({w.get('device') for w in windows if w.get('device')})
  lines = [
      '| row | config | epochs | paper | ours (best val.) | ours (final) |'
      ' diff. | wall | GPU |',
      '|---|---|---|---|---|---|---|---|---|',
  ]
  for row in rows:
    entry = campaign.get('runs', {}).get(row.name, {})
    results = entry.get('results') or {}
    best, final = (
        results.get('test_accuracy_at_best_val'),
        results.get('test_accuracy'),
    )
    pct = lambda x: '–' if x is None else f'{100 * x:.2f}'
    if final is None:
      done = entry.get('step')
      status = f'not finished (step {done:,})' if done else 'queued'
      ours, diff, wall = status, '–', '–'
    else:
      ours = pct(best)
      shown = best if best is not None else final
      diff = f'{100 * shown - row.paper:+.2f}'
      wall = f'{results.get("wall_seconds", 0) / 60:.1f} min'
    lines.append(
        f'| {row.table} | `{row.config}` | {row.epochs} | {row.paper:.2f} |'
        f' {ours} | {pct(final)} | {diff} | {wall} |'
        f' {", ".join(devices) or "–"} |'
    )
  return '\n'.join(lines)


def pack(
    out,
    planned,
    campaign: dict,
    figures: dict[str, bytes],
    max_files: int = MAX_FILES,
):
  """Writes campaign.json, figures.tar and compact copies into `out`.

  `figures` maps '<row>/<file name>' to a PNG's bytes.

  A compact copy that would take the folder over `max_files` is left out
  (campaign.json says so), so that what comes back is complete otherwise.

  Raises:
    CampaignError: more than `max_files` files or one over MAX_FILE_BYTES.
  """

  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  # Copies an earlier pack left here (its runs restored by now) are made
  # again from the workdirs, or are of runs finished since.
  for old in out.glob(f'{COMPACT_PREFIX}*'):
    shutil.rmtree(old)
  for row, run, config in planned:
    entry = campaign['runs'].get(row.name, {})
    entry.pop('compact', None)
    entry.pop('compact_dropped', None)
    copy = out / f'{COMPACT_PREFIX}{row.name}'
    if (
        entry.get('status') != 'finished'
        and compact.compactable(config)
        and (loading.checkpoint_steps(run.workdir))
    ):
      made = pathlib.Path(run.overrides.get('compact_dir', ''))
      step = loading.checkpoint_steps(run.workdir)[-1]
      if (
          made.is_dir()
          and json.loads((made / compact.MANIFEST).read_text())['step'] == step
      ):
        if copy.exists():
          shutil.rmtree(copy)
        shutil.copytree(made, copy)  # The loop's copy of this very step.
      else:
        compact.compact(run.workdir, copy, max_file_bytes=MAX_FILE_BYTES)
      entry['compact'] = copy.name
      entry['compact_bytes'] = sum(p.stat().st_size for p in copy.iterdir())
  if figures:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
      for name, data in sorted(figures.items()):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (out / FIGURES_FILE).write_bytes(buffer.getvalue())
  dropped = []
  for row, _, _ in planned:
    entry = campaign['runs'].get(row.name, {})
    copy = out / entry.get('compact', '-')
    count = (
        sum(
            1 for p in out.rglob('*') if p.is_file() and p.name != CAMPAIGN_FILE
        )
        + 1
    )
    if entry.get('compact') and copy.is_dir() and count > max_files:
      shutil.rmtree(copy)
      entry['compact_dropped'] = (
          f'{entry.pop("compact")} left out: {count} files with it, at most '
          f'{max_files} come back'
      )
      dropped.append(entry['compact_dropped'])
  (out / CAMPAIGN_FILE).write_text(
      json.dumps(campaign, indent=1, sort_keys=True)
  )
  if dropped:
    raise CampaignError('; '.join(dropped))
  files = sorted(p for p in out.rglob('*') if p.is_file())
  too_big = [
      f'{p.relative_to(out)} ({p.stat().st_size:,} bytes)'
      for p in files
      if p.stat().st_size > MAX_FILE_BYTES
  ]
  if len(files) > max_files or too_big:
    raise CampaignError(
        f'{out} holds {len(files)} files'
        + (
            f', over {MAX_FILE_BYTES:,} bytes: {", ".join(too_big)}'
            if too_big
            else ''
        )
        + f'; at most {max_files} files of {MAX_FILE_BYTES:,} bytes come back'
    )
  return files


def unpack(directory, to):
  """Writes the finished runs of packed files as stored runs for the report."""
  campaign = read_campaign(directory)
  figures = _read_figures(directory)
  written = []
  for name, entry in campaign['runs'].items():
    if entry.get('status') != 'finished':
      continue
    folder = pathlib.Path(to) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / workdir_lib.RESULTS_FILE).write_text(
        json.dumps(entry['results'], indent=2, sort_keys=True)
    )
    if 'config_json' in entry:
      (folder / workdir_lib.CONFIG_FILE).write_text(
          json.dumps(entry['config_json'], indent=2, sort_keys=True)
      )
    for key, figure in figures.items():
      if key.startswith(f'{name}/'):
        (folder / key.partition('/')[2]).write_bytes(figure)
    written.append(str(folder))
  return written
