"""Pricer's price metrics as an ``evaluate`` metric module.

Load it by path, which ``evaluate`` 0.4.6 does without any network access::

    evaluate.load("/abs/path/to/src/pricer/evaluation/price_metrics")

``evaluate`` copies this script and ``scoring.py`` (found through the relative import)
into its modules cache (``HF_MODULES_CACHE``) and imports them from there, so the folder
must stay self-contained: no imports from ``pricer``. See ``scoring.py`` for how
unparseable predictions (None/NaN) are counted.
"""

import datasets
import evaluate

from .scoring import summarise

_DESCRIPTION = (
    "Price estimation metrics: mean absolute error (USD), RMSLE, hit rate (error < $40 or < 20% of "
    "the true price), R^2, the count of unparseable predictions, n, and the green/orange/red band counts."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions: estimated prices in USD; None or NaN marks an unparseable answer.
    references: true prices in USD, finite and non-negative.
Returns:
    mae, rmsle, r2: over parseable predictions only (NaN if there are none); negative
        predictions are clipped at 0 for rmsle.
    hit_rate: green items / n, unparseable predictions counting as misses.
    unparseable, n, green, orange, red: counts; orange is an error < $80 or < 40%.
"""


class PriceMetrics(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions: list[float | None], references: list[float]) -> dict[str, float | int]:
        return summarise(references, predictions)
