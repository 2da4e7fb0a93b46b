"""End-to-end training on real CIFAR-10, through `train_and_evaluate` and the CLI."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from beta_lasso import train
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
    state = checkpointer.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata))
  return state['params']


# create_optimizer: what is regularized, and the schedule.
_PARAMS = {'layer1': {'kernel': jnp.ones((3, 3, 3, 4))},
           'bn1': {'scale': jnp.ones((4,)), 'bias': jnp.ones((4,))},
           'head': {'kernel': jnp.ones((4, 10)), 'bias': jnp.ones((10,))}}


def _first_update(config):
  tx, _ = train.create_optimizer(config, _PARAMS, 100, 10)
  zeros = jax.tree.map(jnp.zeros_like, _PARAMS)
  updates, _ = tx.update(zeros, tx.init(_PARAMS), _PARAMS)
  return {f'{layer}/{name}': bool(jnp.any(u != 0))
          for layer, leaves in updates.items() for name, u in leaves.items()}


def test_sgd_weight_decay_skips_biases_and_batchnorm_unless_all():
  config = sconv.get_config('cpu')
  # With zero gradients only weight decay moves a parameter.
  assert _first_update(config) == {
      'layer1/kernel': True, 'bn1/scale': False, 'bn1/bias': False,
      'head/kernel': True, 'head/bias': False}
  config.regularize = 'all'
  assert all(_first_update(config).values())


def test_beta_lasso_regularize_all_reaches_biases():
  config = sfc_beta_lasso.get_config('cpu')
  kernels = _first_update(config)
  assert kernels == {'layer1/kernel': True, 'bn1/scale': False,
                     'bn1/bias': False, 'head/kernel': True, 'head/bias': False}
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
  assert results['weights'] == {'layer1': 3 * 81 * 8, 'fc1': 16 * 16 * 8 * 192,
                                'head': 192 * 10}
  assert results['nnz'] == results['weights']  # SGD leaves weights dense.
  assert [h['step'] for h in results['history']] == [49, 98]
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['test_accuracy'] == results['test_accuracy']
  assert saved['config']['model'] == 'sconv'
  assert any(p.name.startswith('events.out.tfevents')
             for p in tmp_path.iterdir())


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

