"""The paper's training recipe (appendix A.2), shared by every config.

Each config in this folder imports this one and overrides the model and the
optimizer. Durations are in epochs (fractions allowed) and are turned into steps
in one place, `beta_lasso.train.epochs_to_steps`. Every config takes the
paper's two budgets as its argument: `file.py:400` and `file.py:4000` epochs
(Table 1 reports both; Table 2 the second).

Fields that the chosen optimizer, model or augmentation does not read are off
(0 or None): `beta_lasso.training.validation.UNUSED` lists them and refuses any other
value, so that a saved config says what ran.
"""

import ml_collections

from beta_lasso.training import sharding


def get_config():
  """Returns the defaults: S-CONV at the paper's size, SGD, 400 epochs."""
  config = ml_collections.ConfigDict()

  # Model.
  config.model = 'sconv'  # A name in beta_lasso.models.MODELS.
  config.alpha = (
      150  # Base channels: 150 for the S family, 15 for the D family.
  )
  config.model_kwargs = (
      ml_collections.ConfigDict()
  )  # E.g. width (3fc), kernel_size (resnet18).
  config.dropout_rate = (
      0.0  # On the inputs of the last two FC layers; 0 = none.
  )
  config.half_precision = (
      False  # bf16 compute; weights and BatchNorm stay fp32.
  )
  # How locally connected layers compute: auto (per layer, the fastest
  # measured on the backend, BENCHMARKS.md), conv_local, patches or
  # masked_dense. Same parameters and outputs (up to float rounding)
  # whatever the choice.
  config.local_impl = 'auto'

  # Data.
  # cifar10, cifar100 or svhn_cropped (the paper's settings), or any TFDS
  # image classification dataset of one image shape (beta_lasso.data.datasets).
  config.dataset = 'cifar10'
  config.data_dir = ml_collections.config_dict.placeholder(
      str
  )  # None: TFDS_DATA_DIR or the TFDS default.
  config.download = True  # Let TFDS download and prepare a missing dataset.
  # A .npz of `python -m beta_lasso.data.cache` (or a JPEG bundle) to read
  # instead of TFDS: no TensorFlow needed. Its image shape and classes come
  # from the file; `dataset` names the table's settings where they fit.
  config.data_file = ml_collections.config_dict.placeholder(str)
  # The paper keeps each run's step of best validation accuracy (appendix
  # A.2; the split is not published): 5,000 of CIFAR's 50,000 training images
  # are held out, and test accuracy is reported at the best validation step
  # (results.json: test_accuracy_at_best_val) beside the final one. Integer
  # slices, which data files read too; for another dataset size both, or set
  # val_split to None (on the command line `--config.val_split=`) and
  # train_split='train' for no selection (the `:cpu` variants do, as their
  # measured numbers in the README did).
  config.train_split = 'train[:45000]'
  config.val_split = ml_collections.config_dict.placeholder(str)
  config.val_split = 'train[45000:]'  # Evaluated with eval_split at every eval.
  config.eval_split = 'test'  # TFDS split reported as test accuracy.
  # none, crop_flip, crop_flip_cutout or fast_autoaugment (Lim et al.'s
  # searched policy for the dataset, then crop_flip_cutout).
  config.augment = 'crop_flip'
  # None: the dataset's (flip for CIFAR, not for SVHN's digits nor for
  # datasets outside the table; Cutout 16 on CIFAR, 20 on SVHN, else half the
  # image side). Cutout applies with augment='crop_flip_cutout' and
  # 'fast_autoaugment'.
  config.flip = ml_collections.config_dict.placeholder(bool)
  config.cutout = ml_collections.config_dict.placeholder(int)
  # One fixed permutation of pixel positions (seeded by `seed`), applied to
  # every split after augmentation: the images keep their content and lose
  # their geometry. Saved in the workdir (pixel_permutation.npy).
  config.permute_pixels = False

  # Optimization.
  config.optimizer = 'sgd'  # sgd or beta_lasso.
  config.batch_size = 512  # Global batch, split over all devices.
  config.eval_batch_size = 512  # Global batch for the test set.
  config.num_epochs = 400.0
  config.learning_rate = 0.1  # Peak of the cosine schedule, stepped per batch.
  config.warmup_epochs = (
      0.0  # Linear warmup before the cosine (the paper has none).
  )
  config.momentum = 0.9  # SGD only; beta-LASSO has no momentum (set 0).
  config.weight_decay = 5e-4  # SGD only, on kernels (beta-LASSO: set 0).
  # beta-LASSO only, so 0 here; configs/sfc_beta_lasso.py sets the paper's
  # (beta 50, lambda 5e-6 for the FC layers, 2e-5 for layer 1).
  config.l1 = 0.0  # beta-LASSO lambda for the FC layers.
  config.l1_conv = 0.0  # beta-LASSO lambda for the layers that stand for convolutions (layer1..).
  config.beta = (
      0.0  # beta-LASSO threshold is beta * lambda (not scaled by the lr).
  )
  config.regularize = 'kernels'  # What L1 / weight decay touch: kernels or all.

  # Devices (see beta_lasso/training/sharding.py). The mesh is (data, model); batches
  # split over data, big kernels over model.
  config.mesh_model = 1  # Devices on the model axis (within one process); 1: parameters replicated.
  config.fsdp = False  # Also split big kernels over the data axis (FSDP), gathered for each step.
  # Kernels with fewer entries stay replicated.
  config.shard_min_weights = sharding.MIN_WEIGHTS

  # Loop.
  # Splits resident on the accelerator, the data order, augmentation and eval
  # in compiled loops, several steps per dispatch: no host work per step.
  config.device_loop = False
  config.steps_per_dispatch = 100  # Device loop: most steps per dispatch (blocks also end at log, eval and save steps).
  config.seed = 0
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.checkpoint_every_epochs = 10.0
  config.max_checkpoints_to_keep = 2
  # A folder for a compact, lossless copy of each checkpoint (beta-LASSO
  # only: `python -m beta_lasso.compact`), a few megabytes that outlive a
  # host whose disk goes with it; None: none.
  config.compact_dir = ml_collections.config_dict.placeholder(str)
  return config


# The paper's budgets, as config arguments: epochs, and epochs between evals
# (and checkpoints).
PAPER_EPOCHS = {'400': (400.0, 10.0), '4000': (4000.0, 50.0)}


def parse_arg(arg, valid=('cpu', *PAPER_EPOCHS)) -> frozenset:
  """Parses `file.py:ARG`, comma-separated tokens such as 'cpu' or '7,cpu'.

  Args:
    arg: the text after the colon in --config=file.py:arg ('' or None: the
      paper's values).
    valid: the tokens this config understands.

  Returns:
    The set of tokens given.

  Raises:
    ValueError: a token that is not in `valid`, two budgets, or a budget
      with 'cpu'.
  """
  tokens = frozenset(t.strip() for t in (arg or '').split(',') if t.strip())
  for token in sorted(tokens - set(valid)):
    raise ValueError(
        f'config argument {token!r} is not valid; choose from: '
        f'{", ".join(valid)} (or none for the paper values)'
    )
  budgets = sorted(tokens & set(PAPER_EPOCHS))
  if len(budgets) > 1 or (budgets and 'cpu' in tokens):
    raise ValueError(
        f'config argument {arg!r} gives {" and ".join(budgets)} '
        'epochs'
        + (' with cpu' if 'cpu' in tokens else '')
        + '; give one budget, or cpu'
    )
  return tokens


def paper_epochs(
    config: ml_collections.ConfigDict, tokens: frozenset
) -> ml_collections.ConfigDict:
  """Sets the paper budget that `tokens` names ('400' or '4000'), if any."""
  for token in tokens & set(PAPER_EPOCHS):
    epochs, every = PAPER_EPOCHS[token]
    config.update(
        dict(
            num_epochs=epochs,
            eval_every_epochs=every,
            checkpoint_every_epochs=every,
        )
    )
  return config


def cpu_sized(
    config: ml_collections.ConfigDict, *, num_epochs: float, **overrides
) -> ml_collections.ConfigDict:
  """Shrinks `config` for a 2-core laptop: minutes, not days.

  Args:
    config: the paper-sized config.
    num_epochs: the short training budget.
    **overrides: model size and anything else the model needs changed.

  Returns:
    `config`, updated in place.
  """
  settings = dict(
      batch_size=256,
      num_epochs=num_epochs,
      log_every_steps=50,
      # The whole train split, no selection: the README's numbers.
      train_split='train',
      val_split=None,
      # Five evals and checkpoints per run show the curve and bound lost work.
      eval_every_epochs=num_epochs / 5,
      checkpoint_every_epochs=num_epochs / 5,
  )
  config.update({**settings, **overrides})
  return config
