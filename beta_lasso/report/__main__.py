r"""The paper's evidence from finished runs: tables, figures and report.md.

  python -m beta_lasso.report --workdirs='workdirs/study/*' --out=report/study

--workdirs takes comma-separated globs of training workdirs (runs still going
are read from their newest checkpoint). Into --out go `report.md` and:

- `fig2_accuracy_vs_weights.png`: test accuracy against weights (Figure 2);
- `fig3_nonzeros.png`: non-zeros per layer over training, with S-CONV's and
  S-LOCAL's counts at the same alpha as reference lines (Figure 3);
- `fig4_filters_<run>.png`: first-layer filters of each run (Figure 4), shown
  side by side in report.md; drawn from the newest checkpoint, or, for a run
  stored without checkpoints, copied from its `fig4_filters.png`;
- `fig5_resnet_kernels.png`: ResNet18 accuracy against kernel size (Figure 5),
  when ResNet18 runs are given;
- `fig_locality.png`: the first layer's window share and spread over training,
  each run against its permuted-pixel null;
- `fig_accuracy.png`: test accuracy and loss over training.

Every number in the tables comes from the runs' results.json: test and
train accuracy, weights, non-zeros, the first layer's locality
(`beta_lasso.metrics.locality`) and the MDL bounds of Theorems 1 and 2
(`beta_lasso.metrics.mdl`).
"""

import glob
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath

from beta_lasso import errors
from beta_lasso.report import evidence
from beta_lasso.report import figures
from beta_lasso.report import filters as filters_lib
from beta_lasso.report import plots
from beta_lasso.report import tables
from beta_lasso.training import loading

# Figure 4 of a run stored without its checkpoints (results/ in the repo).

_WORKDIRS = flags.DEFINE_list(
    'workdirs', None, 'Comma-separated globs of training workdirs.'
)
_OUT = flags.DEFINE_string('out', None, 'Folder for report.md and the PNGs.')
_BITS = flags.DEFINE_integer('bits', 32, 'Bits per weight for the MDL bounds.')
_DELTA = flags.DEFINE_float(
    'delta', 0.05, 'The MDL bounds hold with ' 'probability 1 - delta.'
)


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
    workdirs: list[str], out, *, bits: int = 32, delta: float = 0.05
) -> epath.Path:
  """Writes report.md and every figure for `workdirs` into `out`.

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
          command=' '.join(['python -m beta_lasso.report', *sys.argv[1:]]),
      )
  )
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIRS.value or not _OUT.value:
    sys.exit('error: give --workdirs=GLOB[,GLOB] and --out=DIR')
  errors.check_output_dir(_OUT.value)
  workdirs = find_workdirs(_WORKDIRS.value)
  if not workdirs:
    sys.exit(
        f'error: no workdir with results.json or a checkpoint matches '
        f'{",".join(_WORKDIRS.value)}'
    )
  try:
    path = write_report(
        workdirs, _OUT.value, bits=_BITS.value, delta=_DELTA.value
    )
  except ValueError as e:  # The tables' and figures' refusals of a run.
    errors.exit_with(e)
  print(path)


if __name__ == '__main__':
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
