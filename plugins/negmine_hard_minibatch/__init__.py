"""The ``hard-minibatch`` generator: hardest, semi-hard or top-k-sampled negatives from the batch score matrix."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_hard_minibatch.generator import HardMinibatch

    return [HardMinibatch]
