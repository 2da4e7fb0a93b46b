"""benchmarks.profile_step: the full-size step's timing, floor and trace, run
tiny on real CIFAR-10 (the GPU window runs it at alpha 150)."""

import json

from benchmarks import profile_step


def test_profile_times_counts_and_traces(tmp_path):
  result = profile_step.main(
      [
          f'--out={tmp_path}',
          '--alpha=1',
          '--batch_size=64',
          '--steps_per_dispatch=2',
          '--timed_blocks=1',
          '--profile_steps=2',
      ]
  )
  # S-FC at alpha 1 on 32x32x3: layer1 3072 x (16 x 16 x 1), fc1, head.
  assert result['weights'] == {'layer1': 786_432, 'fc1': 6_144, 'head': 240}
  # 4 FLOPs a layer-1 weight and 6 an other weight, per image.
  assert result['floor']['flops'] == 64 * (4 * 786_432 + 6 * (6_144 + 240))
  assert result['floor']['bytes'] == 20 * (786_432 + 6_144 + 240)
  assert result['step_ms'] > 0 and result['eval_s'] > 0
  # Training's step (weights cast in the update) and the reference beside it.
  assert result['step_ms'] == result['step_ms_cast_in_update']
  assert result['step_ms_forward_cast'] > 0
  assert result['augment'] == 'fast_autoaugment'  # What the campaign trains.
  # 45,000 images in whole batches of 64.
  assert result['epoch_s'] == result['step_ms'] * 703 / 1e3
  # One trace of each way of casting.
  for name in ('cast_in_update', 'forward_cast'):
    assert any(
        f.startswith(f'trace/{name}/') and f.endswith('.xplane.pb')
        for f in result['trace_files']
    ), result['trace_files']
  assert json.loads((tmp_path / 'profile.json').read_text()) == result
  # Each way's program, and whether the update and the cast are one pass:
  # XLA on the CPU keeps them apart (why the cast in the update is off on the
  # CPU by default, BENCHMARKS.md).
  for name in ('cast_in_update', 'forward_cast'):
    assert 'fusion(' in (tmp_path / 'trace' / 'hlo' / f'{name}.txt').read_text()
  assert result['cast_fused'] == {
      'cast_in_update': False,
      'forward_cast': False,
  }


def test_fuses_cast_finds_one_fusion_writing_both_dtypes():
  fused = (
      '%fusion.3 = (f32[3072,256]{1,0}, bf16[3072,256]{1,0}) '
      'fusion(f32[3072,256]{1,0} %p, bf16[3072,256]{1,0} %g), kind=kLoop'
  )
  apart = (
      '%fusion.1 = f32[3072,256]{1,0} fusion(f32[3072,256]{1,0} %p), '
      'kind=kLoop\n%fusion.2 = bf16[3072,256]{1,0} fusion(f32[3072,256]{1,0} '
      '%fusion.1), kind=kLoop'
  )
  assert profile_step.fuses_cast(fused, (3072, 256))
  assert not profile_step.fuses_cast(apart, (3072, 256))
  assert not profile_step.fuses_cast(fused, (3072, 512))
