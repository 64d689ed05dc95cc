"""trainyard: experiments described in YAML, trained with Lightning, tracked in MLflow.

What a plugin author needs is importable from here:

    from trainyard import BuildContext, Params, hookimpl, model, datamodule, environment, algorithm
"""

import os as _os

# MLflow's usage telemetry is off unless asked for (MLFLOW_DISABLE_TELEMETRY=false): trainyard runs
# offline and on clusters. Set here, before anything imports mlflow (which starts its telemetry
# client on import), so that every command, the UI server and the processes they start inherit it.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

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
