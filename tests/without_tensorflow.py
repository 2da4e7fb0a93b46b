"""Runs a module as `python -m` would, as if TensorFlow were not installed.

  python tests/without_tensorflow.py beta_lasso.main --config=...

TensorFlow, TFDS, clu (whose writers import TensorFlow) and TensorBoard are
hidden from the import system: importing them fails as on a host without
them, and `importlib.util.find_spec` finds nothing.
"""

import importlib.machinery
import os
import runpy
import sys

HIDDEN = ('tensorflow', 'tensorflow_datasets', 'clu', 'tensorboard')


class _Hide(importlib.machinery.PathFinder):

  @classmethod
  def find_spec(cls, fullname, path=None, target=None):
    if fullname.split('.')[0] in HIDDEN:
      return None
    return super().find_spec(fullname, path, target)


if __name__ == '__main__':
  sys.meta_path = [
      _Hide if f is importlib.machinery.PathFinder else f for f in sys.meta_path
  ]
  sys.path.insert(0, os.getcwd())
  module = sys.argv[1]
  sys.argv = [module, *sys.argv[2:]]
  runpy.run_module(module, run_name='__main__', alter_sys=True)
