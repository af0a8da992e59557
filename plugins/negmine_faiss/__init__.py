"""The ``faiss`` generator: ANCE-style corpus hard negatives from a FAISS index refreshed during training."""

from negmine import hookimpl


@hookimpl
def negmine_register_generators():
    from negmine_faiss.generator import FaissNegatives

    return [FaissNegatives]
