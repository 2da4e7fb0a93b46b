"""A run's results as typed records: what `results.json` holds, read back.

`train.train_and_evaluate` writes `Results.to_json()` to the workdir's
`results.json`; the report, the sweep summary and the launchers read it back
with `Results.load(workdir)` or `Results.from_json(obj)`, and name fields
(`results.locality.window_share.null_active.median`) instead of string keys.

The JSON on disk is the record of every saved workdir, so it does not change
shape: `from_json` reads the files of today and the older ones, whose fields
added since (best_*, wall_seconds_last, dataset; an eval's epoch and times)
are None there.
"""

from collections.abc import Mapping
import dataclasses
import json
from typing import Any
from typing import Optional
from typing import Union

from etils import epath

from beta_lasso.metrics import locality
from beta_lasso.training import workdir as workdir_lib

# The sets of units `metrics.locality.summarize` reports on, and its
# statistics over them.
SUBSETS = ('active', 'all', 'null_active', 'null_all')
STATS = ('median', 'q25', 'q75')
METRICS = locality.METRICS


@dataclasses.dataclass(frozen=True)
class Quartiles:
  """Median and quartiles over a set of units (None: not measured)."""

  median: Optional[float] = None
  q25: Optional[float] = None
  q75: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class MetricLocality:
  """One locality metric over the active and all units, and their nulls."""

  active: Quartiles = Quartiles()
  all: Quartiles = Quartiles()
  null_active: Quartiles = Quartiles()
  null_all: Quartiles = Quartiles()


@dataclasses.dataclass(frozen=True)
class Locality:
  """The first layer's locality: `metrics.locality.summarize` as a record."""

  window_share: MetricLocality = MetricLocality()
  spread: MetricLocality = MetricLocality()
  ipr: MetricLocality = MetricLocality()
  units: Optional[float] = None
  active_units: Optional[float] = None

  @classmethod
  def from_json(cls, flat: Mapping[str, float]) -> 'Locality':
    """From summarize's flat {'METRIC/SET/STAT': value, 'units': ...}."""

    def metric(name):
      return MetricLocality(
          **{
              subset: Quartiles(
                  **{
                      stat: flat.get(f'{name}/{subset}/{stat}')
                      for stat in STATS
                  }
              )
              for subset in SUBSETS
          }
      )

    return cls(
        **{name: metric(name) for name in METRICS},
        units=flat.get('units'),
        active_units=flat.get('active_units'),
    )

  def to_json(self) -> dict[str, float]:
    """The flat dict that `from_json` reads; measured values only."""
    flat = {}
    for name in ('units', 'active_units'):
      if getattr(self, name) is not None:
        flat[name] = getattr(self, name)
    for name in METRICS:
      for subset in SUBSETS:
        for stat in STATS:
          value = getattr(getattr(getattr(self, name), subset), stat)
          if value is not None:
            flat[f'{name}/{subset}/{stat}'] = value
    return flat


def _locality(obj) -> Optional[Locality]:
  return Locality.from_json(obj) if obj else None


@dataclasses.dataclass(frozen=True)
class Eval:
  """One eval of a run: an entry of its history.

  Attributes:
    step: training steps done.
    test_accuracy: accuracy on the eval split.
    test_loss: mean loss on the eval split.
    nnz: non-zero kernel weights per layer.
    val_accuracy: on the validation split; None without one.
    val_loss: on the validation split; None without one.
    locality: of the first layer; None where it is not measured.
    epoch: epochs done (None in histories written before it was kept).
    wall_seconds: of the run up to this eval, every process of it counted.
    eval_seconds: that this eval took.
  """

  step: int
  test_accuracy: float
  test_loss: float
  nnz: Mapping[str, int]
  val_accuracy: Optional[float] = None
  val_loss: Optional[float] = None
  locality: Optional[Locality] = None
  epoch: Optional[float] = None
  wall_seconds: Optional[float] = None
  eval_seconds: Optional[float] = None

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> 'Eval':
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(
        **{
            **{k: v for k, v in obj.items() if k in fields},
            'locality': _locality(obj.get('locality')),
        }
    )

  def to_json(self) -> dict[str, Any]:
    """The history entry as saved: fields that are None are left out."""
    obj = {
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(self)
        if getattr(self, f.name) is not None
    }
    if self.locality is not None:
      obj['locality'] = self.locality.to_json()
    return obj


@dataclasses.dataclass(frozen=True)
class Results:
  """A run's results: `results.json`, or what a checkpoint tells of a run.

  A run that has not finished has only `config`, `history` and `weights`
  (see `loading.load_results`); its other fields are None.

  Attributes:
    config: the run's config, nested as `ConfigDict.to_json` writes it.
    history: every eval, oldest first.
    weights: kernel weights per layer.
    test_accuracy: of the final network.
    test_loss: of the final network.
    best_val_accuracy: the highest validation accuracy (None without one).
    best_step: the first step that reached it.
    test_accuracy_at_best_val: the test accuracy there, what the paper reports.
    train_accuracy: of the final network on the whole train split,
      unaugmented (the MDL bounds' training error).
    train_loss: likewise.
    train_examples: the size of the train split.
    nnz: non-zero kernel weights per layer of the final network.
    locality: of the final first layer; None where it is not measured.
    steps: training steps done.
    epochs: epochs done.
    wall_seconds: over every process of the run, each up to its last save.
    wall_seconds_last: of the process that finished the run.
    dataset: the dataset's settings and statistics (workdir's dataset.json).
    workdir: where the run was read from; None for a record not read.
  """

  config: Mapping[str, Any]
  history: tuple[Eval, ...]
  weights: Mapping[str, int]
  test_accuracy: Optional[float] = None
  test_loss: Optional[float] = None
  best_val_accuracy: Optional[float] = None
  best_step: Optional[int] = None
  test_accuracy_at_best_val: Optional[float] = None
  train_accuracy: Optional[float] = None
  train_loss: Optional[float] = None
  train_examples: Optional[int] = None
  nnz: Optional[Mapping[str, int]] = None
  locality: Optional[Locality] = None
  steps: Optional[int] = None
  epochs: Optional[float] = None
  wall_seconds: Optional[float] = None
  wall_seconds_last: Optional[float] = None
  dataset: Optional[Mapping[str, Any]] = None
  workdir: Optional[str] = None

  @property
  def finished(self) -> bool:
    """Whether the run wrote its results (else: read from a checkpoint)."""
    return self.test_accuracy is not None

  def last(self, name: str):
    """Field `name` ('nnz', 'locality', 'test_accuracy', ...) of the results,
    else of the newest eval that has it: the latest known value."""
    value = getattr(self, name)
    if value is not None:
      return value
    for entry in reversed(self.history):
      if getattr(entry, name) is not None:
        return getattr(entry, name)
    return None

  @classmethod
  def from_json(
      cls, obj: Mapping[str, Any], workdir: Optional[str] = None
  ) -> 'Results':
    """Reads results.json's object (of any version) or `load_results`' dict.

    Args:
      obj: the parsed JSON. Keys the record does not know are ignored.
      workdir: where it was read from; else the object's own 'workdir'.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in obj.items() if k in fields}
    known.update(
        config=obj.get('config') or {},
        history=tuple(Eval.from_json(h) for h in obj.get('history') or ()),
        weights=obj.get('weights') or {},
        locality=_locality(obj.get('locality')),
    )
    if workdir is not None:
      known['workdir'] = str(workdir)
    return cls(**known)

  def to_json(self) -> dict[str, Any]:
    """The object of results.json: every field, None included, but workdir."""
    obj = {
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(self)
        if f.name != 'workdir'
    }
    obj['history'] = [h.to_json() for h in self.history]
    obj['locality'] = self.locality.to_json() if self.locality else None
    for name in ('config', 'weights', 'nnz', 'dataset'):
      if obj[name] is not None:
        obj[name] = dict(obj[name])
    return obj

  @classmethod
  def load(cls, workdir) -> Optional['Results']:
    """The results.json of `workdir`; None while the run has not finished.

    Raises:
      ValueError: the file does not parse (truncated or edited by hand).
    """
    path = epath.Path(workdir) / workdir_lib.RESULTS_FILE
    if not path.exists():
      return None
    return cls.from_json(json.loads(path.read_text()), workdir=str(workdir))


# What the report's functions take: a record, or the JSON object it reads.
ResultsLike = Union[Results, Mapping[str, Any]]


def as_results(results: ResultsLike) -> Results:
  """`results` as a record: a `Results` as it is, a JSON object read."""
  return results if isinstance(results, Results) else Results.from_json(results)
