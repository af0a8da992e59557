"""Every installed generator that can run on a plain vector task honours the contract."""

import pytest

from negmine.plugins import get_plugin_manager
from negmine.testing import check_generator, make_task

PM = get_plugin_manager()
TASK = make_task()
RUNNABLE = sorted(
    name for name, cls in PM.generators().items()
    if set(map(str, cls.requires)) <= set(TASK.provides)
)


@pytest.mark.parametrize("name", RUNNABLE)
def test_contract(name):
    out = check_generator(PM.generator(name), TASK)
    assert set(out) <= {0, 1}


def test_every_generator_documents_its_options():
    from negmine.generator import option_specs

    for name, cls in PM.generators().items():
        assert cls.__doc__, name
        for spec in option_specs(cls.Options):
            assert spec["help"], f"{name}.{spec['name']} has no help"
