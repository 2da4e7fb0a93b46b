"""End-to-end training on real CIFAR-10, through `train_and_evaluate` and the CLI."""

import json
import logging
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from beta_lasso import optim
from beta_lasso import train
from beta_lasso.data import input_pipeline
from beta_lasso.metrics import locality
from beta_lasso.training import evaluation
from beta_lasso.training import results as results_lib
from configs import sconv
from configs import sfc_beta_lasso


def _final_params(workdir: pathlib.Path):
  """Params of the newest checkpoint in `workdir`, as numpy arrays."""
  checkpoints = workdir / 'checkpoints'
  step = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  path = checkpoints / str(step) / 'state'
  with ocp.PyTreeCheckpointer() as checkpointer:
    # As host numpy arrays, whatever the device topology that saved them.
    metadata = checkpointer.metadata(path).item_metadata.tree
    state = checkpointer.restore(
        path,
        restore_args=jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata
        ),
    )
  return state['params']


# create_optimizer: what is regularized, and the schedule.
_PARAMS = {
    'layer1': {'kernel': jnp.ones((3, 3, 3, 4))},
    'bn1': {'scale': jnp.ones((4,)), 'bias': jnp.ones((4,))},
    'head': {'kernel': jnp.ones((4, 10)), 'bias': jnp.ones((10,))},
}


def _first_update(config):
  tx, _ = train.create_optimizer(config, _PARAMS, 100, 10)
  zeros = jax.tree.map(jnp.zeros_like, _PARAMS)
  updates, _ = tx.update(zeros, tx.init(_PARAMS), _PARAMS)
  return {
      f'{layer}/{name}': bool(jnp.any(u != 0))
      for layer, leaves in updates.items()
      for name, u in leaves.items()
  }


def test_sgd_weight_decay_skips_biases_and_batchnorm_unless_all():
  config = sconv.get_config('cpu')
  # With zero gradients only weight decay moves a parameter.
  assert _first_update(config) == {
      'layer1/kernel': True,
      'bn1/scale': False,
      'bn1/bias': False,
      'head/kernel': True,
      'head/bias': False,
  }
  config.regularize = 'all'
  assert all(_first_update(config).values())


def test_beta_lasso_regularize_all_reaches_biases():
  config = sfc_beta_lasso.get_config('cpu')
  kernels = _first_update(config)
  assert kernels == {
      'layer1/kernel': True,
      'bn1/scale': False,
      'bn1/bias': False,
      'head/kernel': True,
      'head/bias': False,
  }
  config.regularize = 'all'
  assert all(_first_update(config).values())


def test_warmup_then_cosine():
  config = sconv.get_config('cpu')
  config.warmup_epochs = 2.0  # 20 steps at 10 steps per epoch.
  _, schedule = train.create_optimizer(config, _PARAMS, 100, 10)
  lr = config.learning_rate
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(lr / 2)
  assert float(schedule(20)) == pytest.approx(lr)
  assert float(schedule(60)) == pytest.approx(lr / 2, rel=1e-3)  # Cosine half.
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
  config.warmup_epochs = 0.0
  _, schedule = train.create_optimizer(config, _PARAMS, 100, 10)
  assert float(schedule(0)) == pytest.approx(lr)
  assert float(schedule(50)) == pytest.approx(lr / 2)


def test_sconv_learns_real_cifar10(tmp_path):
  config = sconv.get_config('cpu')
  config.alpha = 8
  config.num_epochs = 0.5  # 98 steps of 256 images.
  config.eval_every_epochs = 0.25
  results = train.train_and_evaluate(config, str(tmp_path))

  # 10 classes: chance is 0.10. Half an epoch of S-CONV reaches ~0.40.
  assert results['test_accuracy'] > 0.30
  assert results['steps'] == 98 == train.epochs_to_steps(0.5, 50_000 // 256)
  # S-CONV = 6 s^2 a^2 + (243 + 24 c) a weights at s = 32, c = 10, a = 8.
  assert sum(results['weights'].values()) == 6 * 32**2 * 8**2 + (243 + 240) * 8
  assert results['weights'] == {
      'layer1': 3 * 81 * 8,
      'fc1': 16 * 16 * 8 * 192,
      'head': 192 * 10,
  }
  assert results['nnz'] == results['weights']  # SGD leaves weights dense.
  assert [h['step'] for h in results['history']] == [49, 98]
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['test_accuracy'] == results['test_accuracy']
  assert saved['config']['model'] == 'sconv'
  assert any(
      p.name.startswith('events.out.tfevents') for p in tmp_path.iterdir()
  )


def test_beta_lasso_sparsifies_sfc(tmp_path):
  config = sfc_beta_lasso.get_config('cpu')
  config.alpha = 4
  config.num_epochs = 0.3
  config.l1_conv = 1e-3  # Large enough to prune within 59 steps.
  config.l1 = 2e-4
  results = train.train_and_evaluate(config, str(tmp_path))

  nnz, weights = results['nnz'], results['weights']
  # BatchNorm makes layer 1 scale-invariant: as it shrinks its gradients grow
  # and revive weights, so about half stay zero at this budget (SGD: none).
  assert nnz['layer1'] < 0.75 * weights['layer1']
  assert nnz['fc1'] < weights['fc1']
  assert results['test_accuracy'] > 0.20
  params = _final_params(tmp_path)
  # Algorithm 1: every surviving weight is at least beta * lambda in magnitude.
  kernel = params['layer1']['kernel']
  survivors = np.abs(kernel[kernel != 0])
  assert survivors.min() >= config.beta * config.l1_conv * (1 - 1e-6)
  assert np.count_nonzero(kernel) == nnz['layer1']


# ----------------------------------------------------------------------------
# The pieces of train_and_evaluate, alone.
# ----------------------------------------------------------------------------
def _small_splits_config(model_config, **overrides):
  config = model_config.get_config('cpu')
  config.update(
      dict(
          alpha=2,
          batch_size=128,
          eval_batch_size=128,
          train_split='train[:1280]',
          eval_split='test[:300]',
          **overrides,
      )
  )
  return config


def test_load_splits_reads_each_split_once(monkeypatch):
  config = _small_splits_config(sconv, val_split='train[45000:45200]')
  read = []
  load = input_pipeline.load_split

  def counting(name, split, *args):
    read.append(split)
    return load(name, split, *args)

  monkeypatch.setattr(input_pipeline, 'load_split', counting)
  splits = train.load_splits(config)
  assert read == ['train[:1280]', 'test[:300]', 'train[45000:45200]']
  for split, size in zip(splits, (1280, 300, 200)):
    images, labels = split
    assert images.shape == (size, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (size,) and set(np.unique(labels)) <= set(range(10))
  # The same examples as a split read alone.
  np.testing.assert_array_equal(
      splits.test[0], train.load_split(config, 'test[:300]')[0]
  )
  config.val_split = None
  assert train.load_splits(config).val is None


def _evaluator(config):
  """(state, evaluator, splits, model, normalize) of a fresh model."""
  pieces = train.build(config)
  return (
      pieces.sharded.state,
      pieces.evaluator,
      pieces.splits,
      pieces.model,
      pieces.normalize,
  )


def test_evaluator_on_a_fresh_sfc():
  config = _small_splits_config(sfc_beta_lasso, val_split='train[45000:45200]')
  state, evaluator, splits, model, normalize = _evaluator(config)
  entry = evaluator(state, splits.test, splits.val)

  # The accuracy and loss of the whole split, its last partial batch included.
  images, labels = splits.test
  logits = model.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      normalize(jnp.asarray(images)),
      train=False,
  )
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64))
  assert entry['test_accuracy'] == pytest.approx(
      np.mean(np.argmax(logits, -1) == labels), abs=1e-7
  )
  assert entry['test_loss'] == pytest.approx(
      -np.mean(log_probs[np.arange(len(labels)), labels]), rel=1e-5
  )
  assert set(entry) == {
      'test_accuracy',
      'test_loss',
      'val_accuracy',
      'val_loss',
      'nnz',
      'locality',
  }
  # Freshly initialized: every kernel weight is non-zero.
  assert entry['nnz'] == optim.count_weights(state.params)
  # Dense: locality is measured, and S-FC's layer 1 can be non-local.
  assert entry['locality'] == locality.summarize(
      state.params['layer1']['kernel'], (32, 32, 3)
  )
  assert evaluator.can_be_nonlocal(state.params)
  # A random dense unit spreads over the image about as its null does.
  share = results_lib.Locality.from_json(entry['locality']).window_share
  assert share.all.median == pytest.approx(share.null_all.median, rel=0.1)


def test_evaluator_of_sconv_measures_locality_but_does_not_show_it():
  state, evaluator, splits, _, _ = _evaluator(_small_splits_config(sconv))
  entry = evaluator(state, splits.test)
  assert 'val_accuracy' not in entry
  assert entry['locality']['window_share/all/median'] == 1.0  # 9x9 filters.
  assert not evaluator.can_be_nonlocal(state.params)


def test_eval_line():
  entry = {
      'test_accuracy': 0.39123,
      'val_accuracy': 0.38,
      'nnz': {'layer1': 1944, 'head': 10},
      'locality': {
          'window_share/active/median': 0.4123,
          'window_share/null_active/median': 0.1181,
      },
  }
  line = evaluation.eval_line(
      98,
      entry,
      epoch=0.5,
      train_accuracy=0.37211,
      first_layer='layer1',
      weights={'layer1': 3888},
      show_locality=True,
      eta_seconds=65.2,
  )
  assert line == (
      'Step 98: test accuracy 0.3912, train 0.3721, val 0.3800 | '
      'epoch 0.50 | layer1 1,944/3,888 non-zero | '
      'window share 0.412 vs null 0.118 | ETA 1m05s'
  )
  del entry['val_accuracy']
  line = evaluation.eval_line(
      98,
      entry,
      epoch=0.5,
      train_accuracy=None,
      first_layer=None,
      weights={},
      show_locality=False,
      eta_seconds=None,
  )
  assert line == 'Step 98: test accuracy 0.3912 | epoch 0.50'


def test_console_has_one_short_line_per_eval(tmp_path, caplog):
  config = _small_splits_config(
      sfc_beta_lasso,
      val_split='train[45000:45200]',
      num_epochs=2.0,
      eval_every_epochs=0.5,
      log_every_steps=2,
  )
  with caplog.at_level(logging.INFO):
    results = train.train_and_evaluate(config, str(tmp_path))

  lines = [r.getMessage() for r in caplog.records]
  evals = [line for line in lines if line.startswith('Step ')]
  # One line per eval, with its accuracies, layer 1 and locality against the
  # null, and the time left.
  assert (
      [int(line.split(':')[0].split()[1]) for line in evals]
      == [h['step'] for h in results['history']]
      == [5, 10, 15, 20]
  )
  number = r'\d\.\d{4}'
  for line, h in zip(evals, results['history']):
    assert re.fullmatch(
        rf'Step {h["step"]}: test accuracy {number}, train {number}, '
        rf'val {number} \| epoch {h["epoch"]:.2f} \| layer1 [\d,]+/'
        rf'{results["weights"]["layer1"]:,} non-zero \| window share '
        r'\d\.\d{3} vs null \d\.\d{3} \| ETA \d+(s|m\d\ds)',
        line,
    ), line
    assert f'test accuracy {h["test_accuracy"]:.4f}' in line
  # The full record goes to TensorBoard and results.json, not the console:
  # no line lists the locality keys or the step's metrics.
  assert not any(
      'window_share/' in line or 'train_loss' in line for line in lines
  )
  # results.json is the record's JSON, and reads back as the record.
  saved = json.loads((tmp_path / 'results.json').read_text())
  record = results_lib.Results.load(tmp_path)
  assert record.to_json() == saved == json.loads(json.dumps(results))
  assert record.history[-1].locality == record.locality
  assert record.best_step == saved['best_step']
