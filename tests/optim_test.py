"""Tests for beta_lasso.optim: exact numbers and Algorithm 1 step for step."""

import inspect

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from beta_lasso import optim


def _f32(x):
  return np.asarray(x, np.float32)


def _two_leaf():
  """A kernel and a bias, with values exact in float32."""
  return {
      'w': {'kernel': _f32([[2.0, -1.0], [0.0, 0.25]])},
      'b': {'bias': _f32([1.0, -2.0])},
  }


def _all_true(tree):
  return jax.tree.map(lambda _: True, tree)


def _assert_tree_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _run(opt, params, grads_seq, jit=True):
  """Applies `opt` to a sequence of gradients (under jit); returns params."""

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step

  state = opt.init(params)
  for grads in grads_seq:
    params, state = step(params, state, grads)
  return params


# add_l1_sign and hard_threshold: exact numbers.


def test_add_l1_sign_default_mask_only_touches_kernels():
  params = _two_leaf()
  ones = jax.tree.map(np.ones_like, params)
  opt = optim.add_l1_sign(0.5)
  updates, _ = opt.update(ones, opt.init(params), params)
  _assert_tree_equal(
      updates,
      {
          'w': {'kernel': _f32([[1.5, 0.5], [1.0, 1.5]])},
          'b': {'bias': _f32([1.0, 1.0])},
      },
  )


def test_add_l1_sign_explicit_mask():
  params = _two_leaf()
  ones = jax.tree.map(np.ones_like, params)
  opt = optim.add_l1_sign(
      0.5, mask={'w': {'kernel': False}, 'b': {'bias': True}}
  )
  updates, _ = opt.update(ones, opt.init(params), params)
  _assert_tree_equal(
      updates,
      {
          'w': {'kernel': _f32([[1.0, 1.0], [1.0, 1.0]])},
          'b': {'bias': _f32([1.5, 0.5])},
      },
  )


def test_add_l1_sign_per_parameter_l1():
  params = _two_leaf()
  zeros = jax.tree.map(np.zeros_like, params)
  l1 = {'w': {'kernel': 0.25}, 'b': {'bias': 2.0}}
  opt = optim.add_l1_sign(l1, mask=_all_true)
  updates, _ = opt.update(zeros, opt.init(params), params)
  _assert_tree_equal(
      updates,
      {
          'w': {'kernel': _f32([[0.25, -0.25], [0.0, 0.25]])},
          'b': {'bias': _f32([2.0, -2.0])},
      },
  )


def test_hard_threshold_default_mask():
  params = _two_leaf()
  # p + u = [1.5, -0.75, 3, 1.0] for the kernel; 1.0 sits on the threshold.
  updates = {
      'w': {'kernel': _f32([[-0.5, 0.25], [3.0, 0.75]])},
      'b': {'bias': _f32([-0.5, 1.75])},
  }
  opt = optim.hard_threshold(1.0)
  new_updates, _ = opt.update(updates, opt.init(params), params)
  _assert_tree_equal(
      new_updates,
      {
          'w': {'kernel': _f32([[-0.5, 1.0], [3.0, 0.75]])},
          'b': {'bias': _f32([-0.5, 1.75])},
      },
  )
  new_params = optax.apply_updates(params, new_updates)
  _assert_tree_equal(
      new_params,
      {
          'w': {'kernel': _f32([[1.5, 0.0], [3.0, 1.0]])},
          'b': {'bias': _f32([0.5, -0.25])},
      },
  )


def test_hard_threshold_all_masked_and_per_parameter():
  params = _two_leaf()
  updates = {
      'w': {'kernel': _f32([[-0.5, 0.25], [3.0, 0.75]])},
      'b': {'bias': _f32([-0.5, 1.75])},
  }
  for threshold in (1.0, {'w': {'kernel': 1.0}, 'b': {'bias': 1.0}}):
    opt = optim.hard_threshold(threshold, mask=_all_true)
    new_updates, _ = opt.update(updates, opt.init(params), params)
    _assert_tree_equal(
        optax.apply_updates(params, new_updates),
        {
            'w': {'kernel': _f32([[1.5, 0.0], [3.0, 1.0]])},
            'b': {'bias': _f32([0.0, 0.0])},
        },
    )
  # A per-parameter threshold: 4 on the kernel, 0.3 on the bias.
  opt = optim.hard_threshold(
      {'w': {'kernel': 4.0}, 'b': {'bias': 0.3}}, mask=_all_true
  )
  new_updates, _ = opt.update(updates, opt.init(params), params)
  _assert_tree_equal(
      optax.apply_updates(params, new_updates),
      {
          'w': {'kernel': _f32([[0.0, 0.0], [0.0, 0.0]])},
          'b': {'bias': _f32([0.5, 0.0])},
      },
  )


@pytest.mark.parametrize(
    'make',
    [
        lambda: optim.add_l1_sign(0.1),
        lambda: optim.hard_threshold(0.1),
        lambda: optim.beta_lasso(0.1, 0.1, 2.0),
        lambda: optim.add_l1_sign(optax.constant_schedule(0.1)),
    ],
)
def test_params_none_raises(make):
  params = _two_leaf()
  opt = make()
  with pytest.raises(ValueError, match='params'):
    opt.update(params, opt.init(params))


# beta_lasso against Algorithm 1.


def _algorithm1(params, grads_seq, lr_fn, lam, beta, regularized):
  """Plain numpy Algorithm 1; `lam` and `regularized` are trees like params."""
  theta = jax.tree.map(np.array, params)
  for t, grads in enumerate(grads_seq):
    lr = np.float32(lr_fn(t))

    def one(th, g, lam_, reg):
      if not reg:
        return th - lr * g
      th = th - lr * (g + lam_ * np.sign(th))
      return th * (np.abs(th) >= beta * lam_)

    theta = jax.tree.map(one, theta, grads, lam, regularized)
  return theta


def _mlp_params(key):
  k1, k2 = jax.random.split(key)
  return {
      'layer1': {
          'kernel': 0.1 * jax.random.normal(k1, (8, 16)),
          'bias': jnp.zeros((16,)),
      },
      'fc1': {
          'kernel': 0.1 * jax.random.normal(k2, (16, 4)),
          'bias': jnp.zeros((4,)),
      },
  }


def _grads_seq(params, n, key, scale=0.1):
  leaves, treedef = jax.tree.flatten(params)
  out = []
  for k in jax.random.split(key, n):
    ks = jax.random.split(k, len(leaves))
    out.append(
        jax.tree.unflatten(
            treedef,
            [
                scale * jax.random.normal(kk, x.shape)
                for kk, x in zip(ks, leaves)
            ],
        )
    )
  return out


def test_beta_lasso_matches_algorithm1():
  params = _mlp_params(jax.random.key(0))
  grads_seq = _grads_seq(params, 20, jax.random.key(1))
  lr = optax.cosine_decay_schedule(0.1, decay_steps=20)
  lam = optim.per_layer_l1(params, 5e-3, [(r'^layer1/', 2e-2)])
  beta = 2.0
  got = _run(optim.beta_lasso(lr, lam, beta), params, grads_seq)
  jit_lr = jax.jit(lr)  # Eager and jitted cosines can differ by an ulp.
  want = _algorithm1(
      params,
      jax.device_get(grads_seq),
      lambda t: jit_lr(jnp.int32(t)),
      lam,
      beta,
      optim.kernel_mask(params),
  )
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    # XLA may fuse p + lr * u into one FMA, so the last bit can differ; atol
    # covers entries near zero, far below the thresholds (1e-2 and 4e-2).
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(g) == 0, w == 0)
  # The run must exercise the threshold: some, not all, kernel entries zero.
  zero_frac = {
      k: float(np.mean(np.asarray(v['kernel']) == 0)) for k, v in got.items()
  }
  assert all(0.05 < f < 0.95 for f in zero_frac.values()), zero_frac
  assert not np.any(np.asarray(got['fc1']['bias']) == 0)


def test_beta_zero_is_plain_l1_sgd():
  params = _mlp_params(jax.random.key(2))
  # A tiny weight that any threshold > 0 would remove.
  params['fc1']['kernel'] = params['fc1']['kernel'].at[0, 0].set(1e-9)
  grads_seq = [jax.tree.map(jnp.zeros_like, params)] * 3
  got = _run(optim.beta_lasso(0.1, 1e-12, 0.0), params, grads_seq)
  want = _run(
      optax.chain(optim.add_l1_sign(1e-12), optax.sgd(0.1)), params, grads_seq
  )
  _assert_tree_equal(got, want)
  assert float(got['fc1']['kernel'][0, 0]) != 0.0
  assert np.count_nonzero(got['layer1']['kernel']) == 8 * 16


def test_chain_with_clipping_in_front():
  params = _mlp_params(jax.random.key(3))
  grads_seq = _grads_seq(params, 5, jax.random.key(4), scale=10.0)
  lam = optim.per_layer_l1(params, 5e-3, [(r'^layer1/', 2e-2)])
  opt = optax.chain(
      optax.clip_by_global_norm(1.0), optim.beta_lasso(0.5, lam, 3.0)
  )
  got = _run(opt, params, grads_seq)

  def clip(g):
    norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(g)))
    return jax.tree.map(lambda x: x / np.float32(norm), g)

  want = _algorithm1(
      params,
      [clip(jax.device_get(g)) for g in grads_seq],
      lambda t: 0.5,
      lam,
      3.0,
      optim.kernel_mask(params),
  )
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-8)
  assert np.count_nonzero(np.asarray(got['layer1']['kernel']) == 0) > 0


def test_inject_hyperparams():
  params = _mlp_params(jax.random.key(5))
  grads_seq = _grads_seq(params, 5, jax.random.key(6))
  opt = optax.inject_hyperparams(optim.beta_lasso)(
      learning_rate=0.1, l1=1e-2, beta=2.0
  )
  state = opt.init(params)
  assert set(state.hyperparams) == {'learning_rate', 'l1', 'beta'}
  got = _run(opt, params, grads_seq)
  want = _run(optim.beta_lasso(0.1, 1e-2, 2.0), params, grads_seq)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g) == 0, np.asarray(w) == 0)

  # Changing the injected lambda changes the step, as with a fresh optimizer.
  state = state._replace(hyperparams={**state.hyperparams, 'l1': 0.5})
  updates, _ = opt.update(grads_seq[0], state, params)
  new = optax.apply_updates(params, updates)
  assert np.count_nonzero(new['layer1']['kernel']) == 0  # |theta| < 1.0

  # A learning-rate schedule through inject_hyperparams matches the plain one.
  lr = optax.cosine_decay_schedule(0.1, decay_steps=5)
  opt = optax.inject_hyperparams(optim.beta_lasso)(
      learning_rate=lr, l1=1e-2, beta=2.0
  )
  got = _run(opt, params, grads_seq)
  want = _run(optim.beta_lasso(lr, 1e-2, 2.0), params, grads_seq)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6)

  # A callable mask is not a schedule: it must be named in static_args.
  opt = optax.inject_hyperparams(optim.beta_lasso, static_args=('mask',))(
      learning_rate=0.1, l1=1e-2, beta=2.0, mask=optim.kernel_mask
  )
  got = _run(opt, params, grads_seq)
  want = _run(optim.beta_lasso(0.1, 1e-2, 2.0), params, grads_seq)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6)


def test_l1_schedule_moves_l1_and_threshold_together():
  params = {'d': {'kernel': _f32([[1.0, -1.0, 0.375, 2.0]])}}
  zeros = jax.tree.map(np.zeros_like, params)
  # lambda_t = .125, .25, .375 (exact in float32): thresholds .25, .5, .75.
  l1 = optax.linear_schedule(0.125, 0.375, transition_steps=2)
  opt = optim.beta_lasso(optax.constant_schedule(1.0), l1, 2.0)
  state = opt.init(params)
  seen = []
  for _ in range(3):
    updates, state = opt.update(zeros, state, params)
    params = optax.apply_updates(params, updates)
    seen.append(np.asarray(params['d']['kernel'])[0])
  # Step 0: .375 - .125 = .25 sits on the threshold and is kept.
  np.testing.assert_array_equal(seen[0], _f32([0.875, -0.875, 0.25, 1.875]))
  # Step 1: .875 - .25 = .625 >= .5 is kept; .25 - .25 = 0.
  np.testing.assert_array_equal(seen[1], _f32([0.625, -0.625, 0.0, 1.625]))
  # Step 2: .625 - .375 = .25 < .75 is zeroed; 1.625 - .375 = 1.25 stays.
  np.testing.assert_array_equal(seen[2], _f32([0.0, 0.0, 0.0, 1.25]))


def test_init_on_shape_dtype_structs():
  params = _mlp_params(jax.random.key(7))
  shapes = jax.eval_shape(lambda: params)
  lam = optim.per_layer_l1(shapes, 1e-3, [(r'^layer1/', 2e-3)])
  for opt in (
      optim.beta_lasso(0.1, lam, 50.0),
      optim.beta_lasso(
          optax.cosine_decay_schedule(0.1, 10),
          optax.constant_schedule(1e-3),
          50.0,
      ),
  ):
    abstract = jax.eval_shape(opt.init, shapes)
    concrete = opt.init(params)
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
  assert optim.count_weights(shapes) == {'layer1': 128, 'fc1': 64}


def test_non_flax_pytree():
  params = (_f32([[2.0, -1.0, 0.0]]), [_f32([1.0, -0.2])])
  grads = (_f32([[1.0, 1.0, 1.0]]), [_f32([0.0, 0.0])])
  # Default mask: the 2-D leaf, whatever its name; the 1-D one is a bias.
  # [2 - 1.5, -1 - .5, 0 - 1] = [.5, -1.5, -1]; all >= .5 * 1 are kept.
  got = _run(optim.beta_lasso(1.0, 0.5, 1.0), params, [grads])
  _assert_tree_equal(got, (_f32([[0.5, -1.5, -1.0]]), [_f32([1.0, -0.2])]))
  # Threshold .5 * 2 = 1: .5 goes, -1 sits on the threshold and stays.
  got = _run(optim.beta_lasso(1.0, 0.5, 2.0), params, [grads])
  _assert_tree_equal(got, (_f32([[0.0, -1.5, -1.0]]), [_f32([1.0, -0.2])]))
  # An explicit mask: the 1-D leaf only.
  got = _run(
      optim.beta_lasso(1.0, 0.5, 1.0, mask=(False, [True])), params, [grads]
  )
  _assert_tree_equal(got, (_f32([[1.0, -2.0, -1.0]]), [_f32([0.5, 0.0])]))


def test_default_mask_is_weights_of_any_name():
  # Names of other frameworks: nothing called 'kernel' (NNX state ends in
  # 'kernel/value', Haiku has 'w', PyTorch ports 'weight').
  params = {
      'linear': {'w': _f32([[1.0, -1.0]]), 'b': _f32([1.0, -1.0])},
      'embed': {'weight': _f32([[2.0], [-2.0]])},
      # 2-D, yet a bias and a norm scale (e.g. per position).
      'local': {'bias': _f32([[1.0]]), 'scale': _f32([[1.0]])},
      'steps': np.int32(3),
  }
  mask = optim.weight_mask(params)
  assert mask == {
      'linear': {'w': True, 'b': False},
      'embed': {'weight': True},
      'local': {'bias': False, 'scale': False},
      'steps': False,
  }
  ones = jax.tree.map(lambda x: np.ones_like(x, np.float32), params)
  opt = optim.add_l1_sign(0.5)
  updates, _ = opt.update(ones, opt.init(params), params)
  np.testing.assert_array_equal(updates['linear']['w'], [[1.5, 0.5]])
  np.testing.assert_array_equal(updates['embed']['weight'], [[1.5], [0.5]])
  np.testing.assert_array_equal(updates['linear']['b'], [1.0, 1.0])
  np.testing.assert_array_equal(updates['local']['bias'], [[1.0]])
  assert optim.count_nonzero(params) == {'linear/w': 2, 'embed/weight': 2}


@pytest.mark.parametrize(
    'make',
    [
        lambda mask: optim.add_l1_sign(0.1, mask),
        lambda mask: optim.hard_threshold(0.1, mask),
        lambda mask: optim.beta_lasso(0.1, 0.1, 2.0, mask),
    ],
)
def test_a_mask_that_selects_nothing_raises(make):
  biases_only = {
      'dense': {'bias': _f32([1.0, 2.0])},
      'bn': {'scale': _f32([1.0])},
  }
  with pytest.raises(ValueError, match='selects no parameter.*dense/bias'):
    make(None).init(biases_only)
  with pytest.raises(ValueError, match='selects no parameter'):
    make(optim.kernel_mask).init({'w': _f32([[1.0]])})
  with pytest.raises(ValueError, match='selects no leaf'):
    optim.count_nonzero(biases_only)


def test_string_mask_is_a_path_regex():
  params = _two_leaf()
  ones = jax.tree.map(np.ones_like, params)
  opt = optim.add_l1_sign(0.5, mask='bias$')  # optax would take it as True.
  updates, _ = opt.update(ones, opt.init(params), params)
  _assert_tree_equal(
      updates,
      {
          'w': {'kernel': np.ones((2, 2), np.float32)},
          'b': {'bias': _f32([1.5, 0.5])},
      },
  )
  with pytest.raises(ValueError, match='mask.*not a valid regex'):
    optim.beta_lasso(0.1, 0.1, mask='layer[')
  with pytest.raises(ValueError, match='mask must be a pytree of bools'):
    optim.add_l1_sign(0.1, mask={'w': 'yes', 'b': False})


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('beta', [0.0, 2.0])
def test_non_finite_values_propagate_like_sgd(beta, jit):
  params = {'dense': {'kernel': _f32([[1.0, -1.0, 1e-3, 2.0]])}}
  grads = {'dense': {'kernel': _f32([[np.nan, 0.0, 0.0, np.inf]])}}
  got = _run(optim.beta_lasso(1.0, 1e-4, beta), params, [grads], jit)
  want = _run(optax.sgd(1.0), params, [grads], jit)
  # NaN and -inf where plain SGD has them, not zeros that hide divergence.
  got, want = got['dense']['kernel'], want['dense']['kernel']
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  assert np.isnan(got[0, 0]) and got[0, 3] == -np.inf
  # A NaN parameter stays NaN too.
  nan_params = {'dense': {'kernel': _f32([[np.nan, 1.0]])}}
  got = _run(
      optim.beta_lasso(1.0, 1e-4, beta),
      nan_params,
      [{'dense': {'kernel': _f32([[0.0, 0.0]])}}],
      jit,
  )
  got = got['dense']['kernel']
  assert np.isnan(got[0, 0]) and got[0, 1] != 0


def test_beta_defaults_to_the_papers_50():
  params = {'w': _f32([[1.0, 0.5, 0.25]])}
  zeros = {'w': np.zeros((1, 3), np.float32)}
  # lambda 1e-2, beta 50: threshold 0.5, so .5 - .01 and .25 - .01 go.
  got = _run(optim.beta_lasso(1.0, 1e-2), params, [zeros])
  np.testing.assert_allclose(got['w'], [[0.99, 0.0, 0.0]])
  assert inspect.signature(optim.beta_lasso).parameters['beta'].default == 50


@pytest.mark.parametrize(
    'make, name',
    [
        (lambda: optim.beta_lasso(0.1, -1e-5), 'l1'),
        (lambda: optim.beta_lasso(0.1, float('nan')), 'l1'),
        (lambda: optim.beta_lasso(0.1, '1e-5'), 'l1'),
        (lambda: optim.beta_lasso(0.1, {'w': -1.0}), 'l1'),
        (lambda: optim.beta_lasso(0.1, 1e-5, -50.0), 'beta'),
        (lambda: optim.beta_lasso(0.1, 1e-5, float('inf')), 'beta'),
        (lambda: optim.beta_lasso(0.1, 1e-5, '50'), 'beta'),
        (lambda: optim.beta_lasso(-0.1, 1e-5), 'learning_rate'),
        (lambda: optim.beta_lasso(float('nan'), 1e-5), 'learning_rate'),
        (lambda: optim.beta_lasso('0.1', 1e-5), 'learning_rate'),
        (lambda: optim.add_l1_sign(-1.0), 'l1'),
        (lambda: optim.hard_threshold(-1.0), 'threshold'),
        (lambda: optim.hard_threshold(np.inf), 'threshold'),
        (lambda: optim.per_layer_l1({'w': 0}, -1.0), 'default'),
        (lambda: optim.per_layer_l1({'w': 0}, 1.0, [('w', np.nan)]), "'w'"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(make, name):
  with pytest.raises(ValueError, match=f'{name} must be a finite number'):
    make()


def test_l1_tree_for_the_leaves_a_transform_sees_under_multi_transform():
  params = {
      'conv': {'kernel': _f32([[1.0, -1.0]])},
      'dense': {'kernel': _f32([[2.0, -2.0]]), 'bias': _f32([1.0])},
  }
  zeros = jax.tree.map(np.zeros_like, params)
  labels = {
      'conv': {'kernel': 'lasso'},
      'dense': {'kernel': 'sgd', 'bias': 'sgd'},
  }
  # l1 only for the leaves labelled 'lasso'; a value for a subtree applies to
  # its leaves.
  for l1 in ({'conv': {'kernel': 0.25}}, {'conv': 0.25}):
    opt = optax.multi_transform(
        {'lasso': optim.beta_lasso(1.0, l1, 0.0), 'sgd': optax.sgd(1.0)}, labels
    )
    got = _run(opt, params, [zeros])
    _assert_tree_equal(
        got,
        {'conv': {'kernel': _f32([[0.75, -0.75]])}, 'dense': params['dense']},
    )
  # A tree rooted elsewhere fails at init, naming the path it lacks.
  opt = optax.multi_transform(
      {'lasso': optim.beta_lasso(1.0, {'kernel': 0.25}), 'sgd': optax.sgd(1.0)},
      labels,
  )
  with pytest.raises(
      ValueError,
      match='l1 has no value for parameter '
      "'conv/kernel'.*the params the transform receives",
  ):
    opt.init(params)


# Masks, lambdas and counts.


def test_kernel_mask_and_path_mask():
  params = flax.core.FrozenDict(
      {
          'params': {
              'layer1': {'kernel': 1, 'bias': 2},
              'bn': {'scale': 3, 'bias': 4},
              'kernel_net': {'w': 5},
          }
      }
  )
  assert jax.tree.leaves(optim.kernel_mask(params)) == (
      jax.tree.leaves(jax.tree.map(lambda x: x == 1, params))
  )
  mask = optim.path_mask(params, r'^params/layer1/')
  assert mask['params']['layer1'] == {'kernel': True, 'bias': True}
  assert not any(jax.tree.leaves(mask['params']['bn']))
  assert optim.path_mask(params, 'bias$')['params']['bn']['bias']


def test_per_layer_l1_first_match_wins():
  params = {
      'layer1': {'kernel': 0, 'bias': 0},
      'fc1': {'kernel': 0},
      'head': {'kernel': 0},
  }
  lam = optim.per_layer_l1(
      params, 5e-6, [(r'^layer1/', 2e-5), (r'layer1|fc1', 1e-6)]
  )
  assert lam == {
      'layer1': {'kernel': 2e-5, 'bias': 2e-5},
      'fc1': {'kernel': 1e-6},
      'head': {'kernel': 5e-6},
  }


def test_per_layer_l1_regex_that_matches_nothing_raises():
  variables = {'params': {'layer1': {'kernel': 0}, 'fc1': {'kernel': 0}}}
  # Paths of `variables` start with 'params/': '^layer1/' cannot match.
  with pytest.raises(
      ValueError,
      match=r"'\^layer1/' matches no parameter " 'path.*params/layer1/kernel',
  ):
    optim.per_layer_l1(variables, 5e-6, [(r'^layer1/', 2e-5)])
  lam = optim.per_layer_l1(variables['params'], 5e-6, [(r'^layer1/', 2e-5)])
  assert lam == {'layer1': {'kernel': 2e-5}, 'fc1': {'kernel': 5e-6}}
  lam = optim.per_layer_l1(
      variables, 5e-6, [(r'^layer1/', 2e-5)], allow_unmatched=True
  )
  assert jax.tree.leaves(lam) == [5e-6, 5e-6]
  with pytest.raises(ValueError, match='not a valid regex'):
    optim.per_layer_l1(variables, 5e-6, [('layer[', 2e-5)])


def test_count_nonzero_and_weights():
  params = {
      'layer1': {
          'kernel': _f32([[1.0, 0.0], [0.0, 2.0]]),
          'bias': _f32([0.0, 1.0]),
      },
      'fc1': {'kernel': np.zeros((3, 4), np.float32)},
      'head': {'kernel': jnp.ones((2, 5)), 'bias': jnp.ones((5,))},
  }
  assert optim.count_nonzero(params) == {'layer1': 2, 'fc1': 0, 'head': 10}
  assert optim.count_weights(params) == {'layer1': 4, 'fc1': 12, 'head': 10}
  bias = optim.path_mask(params, 'bias$')
  assert optim.count_nonzero(params, bias) == {'layer1/bias': 1, 'head/bias': 5}
  nested = flax.core.FrozenDict({'params': params})
  assert optim.count_nonzero(nested) == {
      'params/layer1': 2,
      'params/fc1': 0,
      'params/head': 10,
  }
