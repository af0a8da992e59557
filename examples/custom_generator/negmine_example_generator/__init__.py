"""Entry-point module of the example plugin: registers the generator class, importing torch only when asked."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_example_generator.memory_bank import MemoryBankNegatives

    return [MemoryBankNegatives]
