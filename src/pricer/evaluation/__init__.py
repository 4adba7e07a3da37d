"""Evaluation of every Pricer model on the same test split.

- ``metrics``: ``compute_metrics`` and ``colour_band``, backed by the ``evaluate`` metric
  module in ``price_metrics/`` (loaded by path, offline);
- ``harness``: ``evaluate_model``, which predicts, scores, writes reports and records them
  in MLflow and Prefect;
- ``leaderboard``: the latest result per model from MLflow, and a markdown rendering.

Import the submodules directly: this package stays empty so that importing one does not
pull in the others' dependencies (matplotlib, MLflow).
"""
