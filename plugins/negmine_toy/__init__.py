"""The ``toy`` task: a small synthetic two-modality problem with known ground truth (for tests, docs and the demo)."""

from negmine import hookimpl


@hookimpl
def negmine_register_tasks():
    from negmine import TaskSpec
    from negmine_toy.task import OPTIONS, build_toy

    return [
        TaskSpec(
            name="toy",
            build=build_toy,
            profiles={
                "default": "4,000 training pairs from an 8-d latent seen through two random nonlinear views; MLP towers",
                "small": "600 training pairs and tiny towers: for tests (seconds on a CPU)",
                "dense": "like default, but the towers emit dense maps (a 4x4 grid vs a 6-step sequence) scored by MISA",
                "gan": "side a is the picture a small fixed random GAN draws of the latent (16x16, named 8x8 layer): "
                "for GAN-edit generators",
            },
            description="Synthetic pairs (a_i, b_i) = (f(z_i) + noise, g(z_i) + noise) from a shared latent z_i.",
            options=OPTIONS,
        )
    ]
