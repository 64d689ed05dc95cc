"""Environments named by their Gymnasium id: `env: {name: FrozenLake-v1, params: {is_slippery: false}}`.

Any id in Gymnasium's registry can be named in a spec, as can `module:Id`, which imports the
module that registers it (Gymnasium's own convention). Plugins register their environments
with `gymnasium.register` when they are imported, so their ids resolve the same way.

The params of such an environment are its constructor's keyword arguments, checked like any
component's params (unknown keys rejected, types from the defaults), plus `max_episode_steps`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import re
import sys
from typing import Any

from pydantic import Field, create_model

from trainyard.components import BuildContext, Component
from trainyard.params import Params

# "FrozenLake-v1", "trainyard/GridWorld-v0", "ale_py:ALE/Pong-v5": Gymnasium's id grammar.
# Registered components are "plugin.name", which never ends in a version.
GYMNASIUM_ID = re.compile(r"^(?:[\w.]+:)?(?:[\w:.-]+/)?[\w:.-]+-v\d+$")
# Not a constructor argument: rendering is the caller's choice, not the experiment's.
GYMNASIUM = "gymnasium"  # the plugin name such components are recorded under
_NOT_PARAMS = {"self", "render_mode"}


def is_gymnasium_id(name: str) -> bool:
    return bool(GYMNASIUM_ID.match(name))


class GymnasiumParams(Params):
    max_episode_steps: int | None = Field(None, ge=1, description="Truncate episodes after this many steps "
                                                                  "(default: the id's registered limit).")


def gymnasium_component(env_id: str) -> Component:
    """The environment registered under `env_id`, as a component. Raises LookupError (one line)."""
    import gymnasium
    from gymnasium.envs.registration import _find_spec

    module = env_id.split(":")[0] if ":" in env_id.split("/")[0] else None
    try:
        with _installed_imports_only(module):
            env_spec = _find_spec(env_id)  # imports "module:" prefixes, as gymnasium.make does
    except (gymnasium.error.Error, ModuleNotFoundError) as error:
        raise LookupError(_unknown(env_id, error)) from None
    params = _constructor_params(env_spec)

    def build(params: GymnasiumParams, ctx: BuildContext):
        arguments = params.model_dump(exclude_unset=True)
        limit = arguments.pop("max_episode_steps", None)
        try:
            return gymnasium.make(env_id, max_episode_steps=limit, **arguments)
        except (gymnasium.error.Error, AssertionError, KeyError) as error:
            # e.g. FrozenLake's map_name: "5x5" (a KeyError in its map table)
            raise ValueError(f"{env_id} rejected its params: {type(error).__name__}: {error}") from None

    doc = (inspect.getdoc(_entry_point(env_spec)) or "").strip().splitlines()
    return Component("environment", "gymnasium_env", build, params,
                     f"Gymnasium environment {env_spec.id}" + (f": {doc[0]}" if doc else ""))


ALLOW_LOCAL_IMPORTS = "TRAINYARD_ALLOW_LOCAL_IMPORTS"  # set by `trainyard --allow-local-imports`


@contextlib.contextmanager
def _installed_imports_only(module: str | None):
    """Let a spec import `module` only from an installed distribution (or the standard library):
    never from the current folder, which `python -m` puts on sys.path, so that a `mod.py` lying
    beside an untrusted spec cannot run. `trainyard --allow-local-imports` lifts this."""
    if module is None or os.environ.get(ALLOW_LOCAL_IMPORTS) == "1":
        yield
        return
    top = module.split(".")[0]
    installed = importlib.metadata.packages_distributions()
    if top not in installed and top not in sys.stdlib_module_names:
        raise LookupError(f"{module!r} is not a module of an installed distribution: a spec imports only "
                          "those (trainyard --allow-local-imports allows a local module)")
    here = {"", ".", os.getcwd()}
    saved = sys.path[:]
    sys.path[:] = [entry for entry in sys.path if entry not in here and os.path.abspath(entry or ".") != os.getcwd()]
    try:
        yield
    finally:
        sys.path[:] = saved


def _unknown(env_id: str, error: BaseException) -> str:
    import gymnasium

    from trainyard.errors import did_you_mean

    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    reason = reason.split(". Did you register it")[0].split(" Use `gymnasium.pprint")[0]
    hint = did_you_mean(env_id.split(":")[-1], gymnasium.registry)
    return f"unknown Gymnasium environment {env_id!r}: {reason}{hint}"


def _entry_point(env_spec) -> Any:
    from gymnasium.envs.registration import load_env_creator

    entry = env_spec.entry_point
    return load_env_creator(entry) if isinstance(entry, str) else entry


def _constructor_params(env_spec) -> type[Params]:
    """A Params class from the constructor's keyword arguments and the id's registered kwargs."""
    creator = _entry_point(env_spec)
    try:
        signature = inspect.signature(creator)
    except (TypeError, ValueError):
        signature = None
    fields: dict[str, Any] = {}
    for name, parameter in (signature.parameters.items() if signature else ()):
        if name in _NOT_PARAMS or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = env_spec.kwargs.get(name, parameter.default)
        if default is inspect.Parameter.empty:
            fields[name] = (_type_of(None), Field(description=f"constructor argument {name} (required)"))
        else:
            fields[name] = (_type_of(default), Field(default, description=f"constructor argument {name}"))
    name = re.sub(r"\W", "_", env_spec.id)
    return create_model(f"{name}_Params", __base__=GymnasiumParams, **fields)


def _type_of(default: Any) -> Any:
    # Constructor annotations are often strings (postponed evaluation) or missing; the default's
    # type is what the environment is known to accept. bool before int: bool is an int.
    for kind in (bool, int, float, str):
        if isinstance(default, kind):
            return kind
    return Any
