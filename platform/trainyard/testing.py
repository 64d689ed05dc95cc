"""The conformance kit for a plugin's own pytest suite.

    import pytest
    from trainyard.testing import assert_conforms, components_of

    @pytest.mark.parametrize("name", components_of("mine"))
    def test_component_conforms(name):
        assert_conforms(name)

A new component is then checked as soon as the plugin registers it, with no test written for
it. The checks are those of `trainyard plugin check` (see trainyard.conformance).
"""

from __future__ import annotations

from trainyard.conformance import check_component
from trainyard.registry import get_registry


def components_of(plugin: str | None = None) -> list[str]:
    """The qualified names of a plugin's components (every loaded plugin's when None)."""
    registry = get_registry()
    infos = [registry.plugins[plugin]] if plugin is not None else list(registry.plugins.values())
    return [name for info in infos for name in info.components]


def assert_conforms(name: str) -> None:
    """Fail the calling test with one line per failed check of component `name`."""
    import pytest

    failures = check_component(get_registry().find(name))
    if failures:
        pytest.fail("\n".join(map(str, failures)), pytrace=False)
