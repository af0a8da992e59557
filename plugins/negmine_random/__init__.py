"""The ``random`` generator: uniformly drawn other items (the DaveNet baseline)."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_random.generator import RandomNegatives

    return [RandomNegatives]
