"""Two gloo processes (local loss over the gathered global batch) give the same update as one process."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CONFIG = {
    "negatives": ["hard-minibatch"],
    "optimizer": "sgd",
    "momentum": 0.0,
    "weight_decay": 0.0,
    "lr": 0.5,
    "eval_size": 20,
    "checkpoint_every": 0,
    "log_every": 1,
    "device": "cpu",
}


def _train(run_dir, batch_size, profile="small", steps=2, labels=False):
    from negmine import Trainer
    from negmine.plugins import get_plugin_manager
    from negmine.trainer import PlainReporter
    from negmine_toy.task import build_toy

    task = build_toy(profile, seed=0)
    if labels:  # multi-label items: pairs sharing a label are false negatives, across ranks too
        task.train.labels = torch.rand(len(task.train), 4, generator=torch.Generator().manual_seed(5)) < 0.15
    trainer = Trainer(task, {**CONFIG, "batch_size": batch_size, "steps": steps}, plugins=get_plugin_manager(), run_dir=run_dir,
                      reporter=PlainReporter(quiet=True))
    trainer.fit()
    return {k: v.detach().clone() for k, v in task.model.state_dict().items()}


def _worker(rank, world, port, run_dir, profile, out, steps, labels=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from negmine.distributed import shut_down_when_done

    dist.init_process_group("gloo", rank=rank, world_size=world)
    with shut_down_when_done():  # its barrier: rank 1 leaving while rank 0 saved aborted 2 runs in 70
        state = _train(run_dir, batch_size=8, profile=profile, steps=steps, labels=labels)
        if rank == 0:
            torch.save(state, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(tmp_path, profile, steps=2, labels=False):
    single = _train(tmp_path / "one", batch_size=16, profile=profile, steps=steps, labels=labels)
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), profile, str(out), steps, labels), nprocs=2,
             join=True)
    multi = torch.load(out, weights_only=True)
    initial = __import__("negmine_toy.task", fromlist=["build_toy"]).build_toy(profile, seed=0).model.state_dict()
    moved = 0
    for key in single:
        torch.testing.assert_close(multi[key], single[key], rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(single[key], initial[key]))
    assert moved > 0  # the update did something
    # metrics.jsonl logs the global batch (issue 17, item 11): rank 0 logged its own half before
    import json

    def logged(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]

    one, two = logged(tmp_path / "one"), logged(tmp_path / "two")
    assert len(one) == len(two) == steps
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "positive_score", "score_std"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), (key, a[key], b[key])


def test_two_gloo_processes_equal_one_process(tmp_path):
    _check(tmp_path, "small")


def test_two_gloo_processes_equal_one_process_dense_maps(tmp_path):
    _check(tmp_path, "dense")


def test_two_gloo_processes_equal_one_process_with_false_negatives(tmp_path):
    _check(tmp_path, "small", labels=True)
    # the labels changed what was mined: the same run without them ends elsewhere
    plain = _train(tmp_path / "plain", batch_size=16, profile="small")
    labelled = _train(tmp_path / "labelled", batch_size=16, profile="small", labels=True)
    assert any(not torch.equal(plain[k], labelled[k]) for k in plain)


def test_shutdown_is_a_no_op_without_a_group_and_destroys_one():
    from negmine.distributed import shutdown

    shutdown()  # nothing initialised: nothing to do
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    shutdown()
    assert not dist.is_initialized()


def test_shut_down_when_done_destroys_the_group_when_the_block_raises():
    from negmine.distributed import shut_down_when_done

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        with shut_down_when_done():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not dist.is_initialized()
