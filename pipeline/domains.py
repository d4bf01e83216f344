"""The one place that maps settings to the stream engine (stream_models.engine)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import Settings


def engine_config(settings: Settings, domain: str) -> Any:
    """stream_models.engine.EngineConfig of `domain` from the settings."""
    from stream_models.engine import EngineConfig

    m = settings.model(domain)
    device = None if settings.runner.device == "auto" else settings.runner.device
    values = m.model_dump()
    if settings.model_sync.enabled:  # federated averaging reads and writes the scoring detectors' weights
        values["learn_in_background"] = False
    return EngineConfig(domain=domain, device=device, **values)


def build_processor(settings: Settings, domain: str) -> Any:
    """The engine of one domain, as configured (a bad detector name is a ConfigError naming the setting)."""
    from stream_models import catalog
    from stream_models.engine import build_engine, detector_names
    from stream_models.errors import ModelError

    config = engine_config(settings, domain)
    for name in config.contenders:  # plug-ins load (and pass their checks) here, or name the setting
        try:
            catalog.factory(name)
        except ModelError as exc:
            if "unknown detector" not in str(exc):
                raise ConfigError(f"setting '{domain}.detector'/'challengers': {exc}") from exc
    known = detector_names(domain)
    for name in config.contenders:
        if name not in known:
            where = "detector" if name == config.detector else "challengers"
            hint = (f" ({name} consumes {catalog.consumes(name)}, which the {domain} domain does not give)"
                    if name in catalog.names() else "")
            raise ConfigError(f"setting '{domain}.{where}': unknown detector {name!r}{hint}; choose from {known}")
    try:
        engine = build_engine(config)
        engine.detectors()  # builds the models now when the feature names are known (transactions)
        return engine
    except (ModelError, TypeError) as exc:
        raise ConfigError(f"settings '{domain}': {exc}") from exc


def build_processors(settings: Settings) -> dict[str, Any]:
    """topic -> engine for every domain this worker handles."""
    return {settings.topics.for_domain(d): build_processor(settings, d) for d in settings.domains()}
