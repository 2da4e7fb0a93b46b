"""The paper's training recipe (appendix A.2), shared by every config.

Each config in this folder imports this one and overrides the model and the
optimizer. Durations are in epochs (fractions allowed) and are turned into steps
in one place, `beta_lasso.train.epochs_to_steps`.
"""
import ml_collections


def get_config():
  """Returns the defaults: S-CONV at the paper's size, SGD, 400 epochs."""
  config = ml_collections.ConfigDict()

  # Model.
  config.model = 'sconv'  # A name in beta_lasso.models.MODELS.
  config.alpha = 150  # Base channels: 150 for the S family, 15 for the D family.
  config.model_kwargs = ml_collections.ConfigDict()  # E.g. width (3fc), kernel_size (resnet18).
  config.dropout_rate = 0.0  # On the inputs of the last two FC layers; 0 = none.
  config.half_precision = False  # bf16 compute; weights and BatchNorm stay fp32.

  # Data.
  config.dataset = 'cifar10'  # cifar10, cifar100 or svhn_cropped.
  config.data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS_DATA_DIR or the TFDS default.
  config.download = True  # Let TFDS download and prepare a missing dataset.
  # A .npz of `python -m beta_lasso.data_cache` (or a JPEG bundle) to read
  # instead of TFDS: no TensorFlow needed. `dataset` still names its stats.
  config.data_file = ml_collections.config_dict.placeholder(str)
  config.train_split = 'train'  # TFDS split; e.g. 'train[:45000]' to hold out a validation set.
  config.eval_split = 'test'  # TFDS split evaluated; e.g. 'train[45000:]' for validation.
  config.augment = 'crop_flip'  # none, crop_flip or crop_flip_cutout.
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
  config.warmup_epochs = 0.0  # Linear warmup before the cosine (the paper has none).
  config.momentum = 0.9  # SGD only; beta-LASSO has no momentum.
  config.weight_decay = 5e-4  # SGD only, on kernels.
  config.l1 = 5e-6  # beta-LASSO lambda for the FC layers.
  config.l1_conv = 2e-5  # beta-LASSO lambda for the layers that stand for convolutions (layer1..).
  config.beta = 50.0  # beta-LASSO threshold is beta * lambda (not scaled by the lr).
  config.regularize = 'kernels'  # What L1 / weight decay touch: kernels or all.

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
  return config


def parse_arg(arg, valid=('cpu',)) -> frozenset:
  """Parses `file.py:ARG`, comma-separated tokens such as 'cpu' or '7,cpu'.

  Args:
    arg: the text after the colon in --config=file.py:arg ('' or None: the
      paper's values).
    valid: the tokens this config understands.

  Returns:
    The set of tokens given.

  Raises:
    ValueError: a token that is not in `valid`.
  """
  tokens = frozenset(t.strip() for t in (arg or '').split(',') if t.strip())
  for token in sorted(tokens - set(valid)):
    raise ValueError(f'config argument {token!r} is not valid; choose from: '
                     f'{", ".join(valid)} (or none for the paper values)')
  return tokens


def cpu_sized(config: ml_collections.ConfigDict, *, num_epochs: float,
              **overrides) -> ml_collections.ConfigDict:
  """Shrinks `config` for a 2-core laptop: minutes, not days.

  Args:
    config: the paper-sized config.
    num_epochs: the short training budget.
    **overrides: model size and anything else the model needs changed.

  Returns:
    `config`, updated in place.
  """
  config.update(dict(
      batch_size=256, num_epochs=num_epochs, log_every_steps=50,
      # Five evals and checkpoints per run show the curve and bound lost work.
      eval_every_epochs=num_epochs / 5, checkpoint_every_epochs=num_epochs / 5,
      **overrides))
  return config
