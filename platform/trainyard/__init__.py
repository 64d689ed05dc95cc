"""trainyard: experiments described in YAML, trained with Lightning, tracked in MLflow.

What a plugin author needs is importable from here:

    from trainyard import BuildContext, Params, hookimpl, model, datamodule, environment, algorithm
"""

from trainyard.components import (
    OWN,
    Algorithm,
    BuildContext,
    Component,
    Example,
    MetricSink,
    RunReport,
    algorithm,
    datamodule,
    environment,
    model,
)
from trainyard.errors import Problem, SpecError
from trainyard.hookspecs import hookimpl
from trainyard.params import Params

__version__ = "0.1.0"

__all__ = [
    "OWN", "Algorithm", "BuildContext", "Component", "Example", "MetricSink", "Params", "Problem", "RunReport", "SpecError",
    "algorithm", "datamodule", "environment", "hookimpl", "model", "__version__",
]
