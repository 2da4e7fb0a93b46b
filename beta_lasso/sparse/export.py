r"""Exports a trained network as sparse kernels in one .npz file.

  python -m beta_lasso.sparse.export --workdir=/tmp/bl --out=/tmp/bl.npz

The file holds what inference needs and nothing of training: per layer the
non-zero weights in CSR form (`beta_lasso.sparse.csr`), the bias, the geometry, and
whether a ReLU follows; the dataset's normalization statistics; the model name,
alpha and the run's config (JSON). Every BatchNorm is folded into the layer
before it: at inference BN is the affine map x * s + (beta - mean * s) with
s = gamma / sqrt(var + eps) per output unit (or channel), so scaling the
kernel's rows by s and adding the shift to the bias is exact up to float32
rounding (the fold is computed in float64), and leaves zeros zero. The file
loads with numpy alone (no pickle): `beta_lasso.sparse` runs it.

Supported: the S and D families (conv, locally connected or dense layers) and
3-FC, i.e. every chain of linear layers (`ModelSpec.exports` in the
registry). ResNet18's residual graph is not.

File layout (a zlib-compressed npz; the column indices deflate to about half):
'meta', a JSON string (see `export`), and per layer NAME: 'NAME/data',
'NAME/indices', 'NAME/indptr', 'NAME/bias'.
"""

import json
import math
from typing import Any
from typing import Callable

from absl import app
from absl import flags
from etils import epath
import numpy as np

from beta_lasso import errors
from beta_lasso import models
from beta_lasso.data import datasets
from beta_lasso.models import layers as layers_lib
from beta_lasso.sparse import csr
from beta_lasso.training import loading
from beta_lasso.training import workdir as workdir_lib

FORMAT_VERSION = 1
# Same epsilon as every BatchNorm of the models.
_BN_EPSILON = layers_lib.batch_norm(False, name='bn').epsilon
# What stands for a convolution in each family -> the kind in the file.
_KINDS = {'conv': 'conv', 'local': 'local', 'fc': 'dense'}


class UnsupportedModelError(errors.UserError, ValueError):
  """The model is not a chain of linear layers."""


def _padding(size: int, out: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's SAME padding (low, high) along one axis."""
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _bn_fold(batch_stats: dict, params: dict) -> tuple[np.ndarray, np.ndarray]:
  """(scale, shift) in float64 with BN(x) = x * scale + shift at inference."""
  scale = params['scale'].astype(np.float64) / np.sqrt(
      batch_stats['var'].astype(np.float64) + _BN_EPSILON
  )
  shift = params['bias'].astype(np.float64) - batch_stats['mean'] * scale
  return scale.reshape(-1), shift.reshape(-1)


def linear_layer(
    name: str,
    kind: str,
    kernel: np.ndarray,
    *,
    bias: np.ndarray | None = None,
    bn: tuple | None = None,
    relu: bool,
    geometry: dict[str, Any],
) -> dict[str, Any]:
  """One exported layer: kernel as CSR with BatchNorm folded in, and bias.

  Args:
    name: the layer's parameter name (e.g. 'layer1').
    kind: 'dense', 'conv' or 'local'.
    kernel: the layer's kernel as the model stores it; its last axis is the
      output features (for 'dense' the output units).
    bias: the layer's own bias, or None.
    bn: (batch_stats, params) of the BatchNorm that follows, or None. Its
      statistics are per output row of the CSR matrix: per unit for 'dense',
      per channel for 'conv' and 'local'.
    relu: a ReLU follows (after the BatchNorm).
    geometry: in_shape, out_shape and, for 'conv' and 'local', kernel_size,
      strides and padding.

  Returns:
    {'name', 'kind', 'relu', 'kernel_shape', 'csr', 'bias', **geometry}: the
    CSR matrix has one row per output feature and the other kernel axes,
    flattened in C order, as columns (for 'dense' its rows are the columns of
    the model's kernel, the "filters" of the output units).
  """
  kernel = np.asarray(kernel)
  rows = kernel.reshape(-1, kernel.shape[-1]).T
  matrix = csr.from_dense(rows)
  out_features = rows.shape[0]
  new_bias = (
      np.zeros(out_features)
      if bias is None
      else np.asarray(bias, np.float64).reshape(-1)
  )
  if bn is not None:
    scale, shift = _bn_fold(*bn)
    # Multiplying only the stored entries keeps the sparsity pattern.
    matrix['data'] = (
        matrix['data'].astype(np.float64) * scale[csr.row_ids(matrix)]
    )
    new_bias = new_bias * scale + shift
  matrix['data'] = matrix['data'].astype(np.float32)
  return {
      'name': name,
      'kind': kind,
      'relu': relu,
      'kernel_shape': list(kernel.shape),
      'csr': matrix,
      'bias': new_bias.astype(np.float32),
      **geometry,
  }


def _allconv_layers(
    spec: models.ModelSpec, alpha: int, params, stats, image_shape
) -> list[dict[str, Any]]:
  """The S and D families: conv-standing layers, fc1, head."""
  kind = _KINDS[spec.layer_type]
  h, w, c = image_shape
  out = []
  for i, (multiplier, k, s) in enumerate(spec.conv_layers, start=1):
    features = multiplier * alpha
    oh, ow = -(-h // s), -(-w // s)
    geometry = {'in_shape': [h, w, c], 'out_shape': [oh, ow, features]}
    if kind != 'dense':
      geometry.update(
          kernel_size=[k, k],
          strides=[s, s],
          padding=[_padding(h, oh, k, s), _padding(w, ow, k, s)],
      )
    name = f'layer{i}'
    out.append(
        linear_layer(
            name,
            kind,
            params[name]['kernel'],
            relu=True,
            geometry=geometry,
            bn=(stats[f'bn{i}'], params[f'bn{i}']),
        )
    )
    h, w, c = oh, ow, features
  bn = f'bn{len(spec.conv_layers) + 1}'
  return out + _mlp_tail(params, stats, h * w * c, ['fc1'], [bn])


def _three_fc_layers(params, stats, image_shape) -> list[dict[str, Any]]:
  return _mlp_tail(
      params, stats, math.prod(image_shape), ['fc1', 'fc2'], ['bn1', 'bn2']
  )


def _mlp_tail(
    params, stats, in_units: int, hidden: list[str], bns: list[str]
) -> list[dict[str, Any]]:
  """Hidden dense layers each with BN and ReLU, then the head."""
  out = []
  for name, bn in zip(hidden, bns):
    units = params[name]['kernel'].shape[1]
    out.append(
        linear_layer(
            name,
            'dense',
            params[name]['kernel'],
            relu=True,
            bn=(stats[bn], params[bn]),
            geometry={'in_shape': [in_units], 'out_shape': [units]},
        )
    )
    in_units = units
  head = params['head']
  out.append(
      linear_layer(
          'head',
          'dense',
          head['kernel'],
          bias=head['bias'],
          relu=False,
          geometry={
              'in_shape': [in_units],
              'out_shape': [head['kernel'].shape[1]],
          },
      )
  )
  return out


def supported(model: str) -> bool:
  """Whether `model` is a chain of linear layers that exports."""
  return model in models.MODELS and models.MODELS[model].exports


def check_supported(model: str):
  """Raises UnsupportedModelError, in one line, for a model that won't export."""
  if not supported(model):
    valid = ', '.join(m for m in models.MODELS if supported(m))
    raise UnsupportedModelError(
        f'model {model!r} is not supported for sparse inference (it is not a '
        f'chain of linear layers); these are: {valid}'
    )


def network_layers(
    model: str, alpha: int | None, params, batch_stats, image_shape
) -> list[dict[str, Any]]:
  """The exported layers of a model, input to output.

  Raises:
    UnsupportedModelError: for a model that is not a chain of linear layers.
  """
  check_supported(model)
  spec = models.spec(model)
  if spec.conv_layers:
    return _allconv_layers(spec, alpha, params, batch_stats, image_shape)
  return _three_fc_layers(params, batch_stats, image_shape)


def export(
    workdir,
    out,
    *,
    step: int | None = None,
    transform_params: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
  """Writes the newest (or `step`) checkpoint of `workdir` to `out` (.npz).

  Args:
    workdir: a training workdir (config.json and checkpoints/).
    out: the file to write.
    step: which checkpoint; None means the newest.
    transform_params: applied to the params tree before export (e.g.
      pruning, `beta_lasso.sparse.prune`).

  Returns:
    The 'meta' dict stored in the file: format_version, model, alpha,
    model_kwargs, num_classes, image_shape, mean, std (0-255 scale, per
    channel), step, workdir, config (the flattened config.json) and layers
    (per layer its name, kind, relu, kernel_shape, csr_shape, nnz and
    geometry).

  Raises:
    UnsupportedModelError: the model is not a chain of linear layers.
    errors.OutputError: `out` is a folder.
    workdir_lib.WorkdirError: no config.json, or one that does not parse.
    FileNotFoundError: no checkpoint.
    checkpointing.CheckpointError: no checkpoint reads.
  """
  errors.check_output_file(out)
  config = workdir_lib.read_config(workdir)
  if config is None:
    raise workdir_lib.WorkdirError(
        f'--workdir={workdir} holds no {workdir_lib.CONFIG_FILE}: not a '
        'training workdir'
    )
  model = config['model']
  check_supported(model)  # Before reading a checkpoint of hundreds of MB.
  info = datasets.load(
      workdir_lib.read_dataset(workdir),
      config['dataset'],
      f'{workdir}/{workdir_lib.DATASET_FILE}',
  )
  variables = loading.load_variables(workdir, step=step)
  if transform_params is not None:
    variables['params'] = transform_params(variables['params'])
  layers = network_layers(
      model,
      config.get('alpha'),
      variables['params'],
      variables['batch_stats'],
      info.image_shape,
  )
  model_kwargs = {
      k[len('model_kwargs.') :]: v
      for k, v in config.items()
      if k.startswith('model_kwargs.')
  }
  meta = {
      'format_version': FORMAT_VERSION,
      'model': model,
      'alpha': config.get('alpha'),
      'model_kwargs': model_kwargs,
      'num_classes': info.num_classes,
      'image_shape': list(info.image_shape),
      'mean': list(info.mean),
      'std': list(info.std),
      'step': variables['step'],
      'workdir': str(workdir),
      'config': config,
  }
  return write(out, meta, layers)


def write(
    out, meta: dict[str, Any], layers: list[dict[str, Any]]
) -> dict[str, Any]:
  """Writes `layers` (from `network_layers`) and `meta` to the .npz `out`.

  Returns:
    `meta` with 'layers' added: per layer its name, kind, relu, kernel_shape,
    csr_shape, nnz and geometry.
  """
  meta = {**meta, 'layers': []}
  arrays = {}
  for layer in layers:
    layer = dict(layer)
    matrix = layer.pop('csr')
    name = layer['name']
    arrays.update(
        {
            f'{name}/data': matrix['data'],
            f'{name}/indices': matrix['indices'],
            f'{name}/indptr': matrix['indptr'],
            f'{name}/bias': layer.pop('bias'),
        }
    )
    meta['layers'].append(
        {
            **layer,
            'csr_shape': list(matrix['shape']),
            'nnz': len(matrix['data']),
        }
    )
  out = epath.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  # Beside it, then renamed: a failed write leaves no half file at `out`.
  tmp = out.with_name(out.name + '.tmp')
  # A string array, not an object: the file opens with allow_pickle=False.
  with tmp.open('wb') as f:
    np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
  tmp.replace(out)
  return meta


def _define_flags():
  """The command line's flags, defined only when this module is the script.

  Defined at import, --workdir and --out would clash with other modules'
  flags in a process that imports both (e.g. pytest).
  """
  flags.DEFINE_string('workdir', None, 'Training workdir to export.')
  flags.DEFINE_string('out', None, 'The .npz file to write.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default newest.')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  del argv
  args = flags.FLAGS
  meta = export(args.workdir, args.out, step=args.step)
  size = epath.Path(args.out).stat().length
  print(
      f'{meta["model"]} (step {meta["step"]}) -> {args.out}: ' f'{size:,} bytes'
  )
  for layer in meta['layers']:
    total = math.prod(layer['kernel_shape'])
    print(
        f'  {layer["name"]:>8}: {layer["kind"]:5} {layer["nnz"]:>12,} / '
        f'{total:>12,} non-zero ({layer["nnz"] / total:.2%})'
    )


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
