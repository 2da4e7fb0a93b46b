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

import sys

from absl import app
from absl import flags

from beta_lasso import errors
from beta_lasso.report import writer

_WORKDIRS = flags.DEFINE_list(
    'workdirs', None, 'Comma-separated globs of training workdirs.'
)
_OUT = flags.DEFINE_string('out', None, 'Folder for report.md and the PNGs.')
_BITS = flags.DEFINE_integer('bits', 32, 'Bits per weight for the MDL bounds.')
_DELTA = flags.DEFINE_float(
    'delta', 0.05, 'The MDL bounds hold with probability 1 - delta.'
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIRS.value or not _OUT.value:
    sys.exit('error: give --workdirs=GLOB[,GLOB] and --out=DIR')
  errors.check_output_dir(_OUT.value)
  workdirs = writer.find_workdirs(_WORKDIRS.value)
  if not workdirs:
    sys.exit(
        f'error: no workdir with results.json or a checkpoint matches '
        f'{",".join(_WORKDIRS.value)}'
    )
  try:
    path = writer.write_report(
        workdirs,
        _OUT.value,
        bits=_BITS.value,
        delta=_DELTA.value,
        command=' '.join(['python -m beta_lasso.report', *sys.argv[1:]]),
    )
  except ValueError as e:  # The tables' and figures' refusals of a run.
    errors.exit_with(e)
  print(path)


if __name__ == '__main__':
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
