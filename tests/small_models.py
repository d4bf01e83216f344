"""Small detector sizes for tests: `params` of the model settings, so tiny streams train in milliseconds."""

SMALL_PARAMS = {
    "dense_autoencoder": {"hidden": [8, 4]},
    "mlp_classifier": {"hidden": [16]},
    "lstm_classifier": {"lstm_hidden": 8, "head_hidden": 8},
    "fraud_detector": {"ae_hidden": [8, 4], "mlp_hidden": [16]},
    "lstm_autoencoder": {"hidden": 4, "latent": 2},
    "lstm_forecaster": {"hidden": 4},
    "window_autoencoder": {"hidden": 8, "latent": 2},
}


def small(**settings: object) -> dict[str, object]:
    """Model settings with small detectors, a quick warm-up and no automatic promotion unless asked."""
    return {"params": SMALL_PARAMS, "auto_promote": False, "warmup_fit_epochs": 0, "learn_after_warmup": True,
            **settings}
