"""Kept for `from beta_lasso.report import locality`: the measure moved to
`beta_lasso.metrics.locality`, a pure function of arrays used in training too.
"""

from beta_lasso.metrics.locality import METRICS
from beta_lasso.metrics.locality import MIN_NONZEROS
from beta_lasso.metrics.locality import energy_locality
from beta_lasso.metrics.locality import pixel_energy
from beta_lasso.metrics.locality import summarize
from beta_lasso.metrics.locality import unit_locality
from beta_lasso.metrics.locality import unit_metrics
from beta_lasso.metrics.locality import unit_nonzeros
from beta_lasso.metrics.locality import unpermute

__all__ = [
    'METRICS',
    'MIN_NONZEROS',
    'energy_locality',
    'pixel_energy',
    'summarize',
    'unit_locality',
    'unit_metrics',
    'unit_nonzeros',
    'unpermute',
]
