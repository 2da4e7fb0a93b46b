"""The paper's recipe as config overrides: what its runs set on every config.

`launch.paper` puts it on top of each row's config, and
`benchmarks.profile_step` profiles Table 2's step with it, so the step the
profile times is the one the campaign trains.
"""


def recipe(
    augment: str = 'fast_autoaugment', half_precision: bool = True
) -> dict:
  """Fast AutoAugment then Cutout, bf16 compute with float32 weights, the
  splits on the accelerator (`config.device_loop`). The rest of the recipe
  (the 45k/5k selection split, batch 512, cosine from 0.1) is the configs'
  own default."""
  return {
      'augment': augment,
      'half_precision': half_precision,
      'device_loop': True,
  }
