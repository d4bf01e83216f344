"""Evaluation: one implementation of each quality metric, shared by the backtest, the demo and the benchmarks.

- `evaluation.metrics`: ranking metrics (ROC AUC, AP), the Fraud Detection Handbook's Card Precision@k and
  its known-compromised-card rule, confusion counts, precision/recall/F1/FAR/MAR, alert rate, detection delay.
- `evaluation.nab`: SKAB's binary scores and NAB score.
- `evaluation.score_log`: the runner observer that builds the per-event score table.
- `evaluation.report`: metrics of a score table (overall, after warm-up, per period), plots, HTML report.

Submodules are imported on demand; importing this package loads nothing heavy.
"""
