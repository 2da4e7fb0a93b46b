"""report.md and every figure of the paper's evidence, from finished runs.

`write_report(workdirs, out)` is what `python -m beta_lasso.report` runs (its
module docstring lists the files); `find_workdirs` expands its globs.
"""

import glob

from absl import logging
from etils import epath

from beta_lasso import errors
from beta_lasso.report import evidence
from beta_lasso.report import figures
from beta_lasso.report import filters as filters_lib
from beta_lasso.report import plots
from beta_lasso.report import tables
from beta_lasso.training import loading


def find_workdirs(patterns: list[str]) -> list[str]:
  """Workdirs (folders with results.json or checkpoints) matching the globs."""
  found = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) or [pattern]
    for path in matches:
      directory = epath.Path(path)
      if (directory / 'results.json').exists() or loading.checkpoint_steps(
          directory
      ):
        if path not in found:
          found.append(path)
      elif directory.is_dir():
        logging.info('Skipping %s: no results.json and no checkpoint', path)
  return found


def write_report(
    workdirs: list[str],
    out,
    *,
    bits: int = 32,
    delta: float = 0.05,
    command: str = 'python -m beta_lasso.report',
) -> epath.Path:
  """Writes report.md and every figure for `workdirs` into `out`.

  Args:
    workdirs: the runs.
    out: the folder to write (created if missing).
    bits: bits per weight for the MDL bounds.
    delta: the MDL bounds hold with probability 1 - delta.
    command: what made the report, written at its top.

  Returns:
    The path of report.md.

  Raises:
    errors.OutputError: `out` is a file.
  """
  errors.check_output_dir(out)
  # Every run is read before the folder is made: a bad one leaves nothing.
  runs = [loading.load_run(w) for w in workdirs]
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  rows = [tables.row(r, bits=bits, delta=delta) for r in runs]
  order = sorted(range(len(runs)), key=lambda i: tables.sort_key(rows[i]))
  runs = [runs[i] for i in order]
  rows = [rows[i] for i in order]
  names = plots.file_names([r.workdir for r in runs])

  made = {}
  finished = [r for r in runs if r.finished]
  if finished:
    evidence.plot_accuracy_vs_weights(
        finished, out / 'fig2_accuracy_vs_weights.png'
    )
    made['fig2'] = 'fig2_accuracy_vs_weights.png'
  with_history = [r for r in runs if r.history]
  if with_history:
    plots.plot_nonzeros(with_history, out / 'fig3_nonzeros.png')
    plots.plot_accuracy(with_history, out / 'fig_accuracy.png')
    made['fig3'] = 'fig3_nonzeros.png'
    made['accuracy'] = 'fig_accuracy.png'
  if evidence.plot_resnet_kernels(finished, out / 'fig5_resnet_kernels.png'):
    made['fig5'] = 'fig5_resnet_kernels.png'
  if evidence.plot_locality(runs, out / 'fig_locality.png'):
    made['locality'] = 'fig_locality.png'
  filters = []
  for results, name in zip(runs, names):
    model = results.config.get('model')
    file_name = f'fig4_filters_{name}.png'
    archived = epath.Path(results.workdir) / filters_lib.ARCHIVED_FILE
    if filters_lib.first_layer_name(model) is None:
      continue
    if loading.checkpoint_steps(results.workdir):
      filters_lib.plot_workdir_filters(
          results.workdir, out / file_name, num_filters=16, columns=8
      )
    elif archived.exists():  # A stored run keeps its figure, not its weights.
      (out / file_name).write_bytes(archived.read_bytes())
    else:
      continue
    filters.append((figures.run_label(results.config), file_name))

  path = out / 'report.md'
  path.write_text(
      tables.markdown(
          rows,
          made,
          filters,
          bits=bits,
          delta=delta,
          command=command,
      )
  )
  return path
