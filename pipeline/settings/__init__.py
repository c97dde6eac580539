"""Settings: one typed declaration per setting, read by the CLI and the Dagster configs alike.

Each settings group is a frozen pydantic dataclass that lives beside the code it configures
(:class:`~pipeline.ingest.IngestSettings`, :class:`~pipeline.preprocess.PreprocessSettings`,
:class:`~pipeline.train.TrainConfig`, :class:`~pipeline.preprocess.AugmentConfig`,
:class:`~pipeline.evaluate.CVSettings`, :class:`~pipeline.evaluate.EvaluationSettings`,
:class:`~pipeline.explain.ExplainSettings`, :class:`~pipeline.explain.AttributionConfig`,
:class:`~pipeline.scoring.ScoreSettings`). A field's type, default, help text and validation are
written once, there; :mod:`pipeline.settings.cli` turns fields into command-line flags and
``assets/config.py`` into Dagster ``Config`` classes. Named profiles (:mod:`pipeline.settings.profiles`)
replace defaults for a purpose (``demo``: small and quick on a CPU).
"""

from pipeline.settings.fields import SettingSpec, setting, specs
from pipeline.settings.kinds import MODEL_KINDS, dims_of, kind_of
from pipeline.settings.profiles import PROFILES, profile_defaults

__all__ = ["MODEL_KINDS", "PROFILES", "SettingSpec", "dims_of", "kind_of", "profile_defaults", "setting", "specs"]
