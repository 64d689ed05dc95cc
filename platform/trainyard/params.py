"""The base class for a component's parameters.

Every model, data module, environment and algorithm declares its parameters as a subclass of
`Params`: typed fields with defaults and a one-line `description` each. The spec validator,
`trainyard plugins show` and the sweep validator all read this one declaration.
"""

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Typed, documented parameters of one component; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
