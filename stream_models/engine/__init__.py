"""The one stream engine (see stream_engine.py): the live worker, backtests, the demo and benchmarks run it."""

from stream_models.engine.batch import DomainBatch
from stream_models.engine.champion import ChampionBoard, Contender, Scored
from stream_models.engine.config import EngineConfig
from stream_models.engine.stream_engine import StreamEngine, build_engine, detector_names, make_detector

__all__ = ["ChampionBoard", "Contender", "DomainBatch", "EngineConfig", "Scored", "StreamEngine", "build_engine",
           "detector_names", "make_detector"]
