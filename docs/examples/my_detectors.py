"""Two plug-in detectors a team writes outside the package (docs/plugins.md).

Use one with `detector: docs/examples/my_detectors.py:TinyAutoencoder` in a settings file, or
`STREAMWARDEN_TRANSACTIONS__DETECTOR=docs/examples/my_detectors.py:TinyAutoencoder`.
"""

from river import anomaly
from torch import nn

from stream_models.plugins import RiverRowDetector, TorchRowDetector


class TinyAutoencoder(TorchRowDetector):
    """A user-defined torch module: F -> 4 -> F; scores are reconstruction errors."""

    def build_module(self, n_features: int) -> nn.Module:
        return nn.Sequential(nn.Linear(n_features, 4), nn.Tanh(), nn.Linear(4, n_features))


class FraudNet(TorchRowDetector):
    """A supervised one: learns from chargebacks (labels); scores are fraud probabilities."""

    objective = "classification"

    def build_module(self, n_features: int) -> nn.Module:
        return nn.Sequential(nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, 1))


class OneClassSvm(RiverRowDetector):
    """A River estimator: online one-class SVM on standardised rows."""

    def make_estimator(self, nu: float = 0.05):
        from river import preprocessing

        return preprocessing.StandardScaler() | anomaly.OneClassSVM(nu=nu)
