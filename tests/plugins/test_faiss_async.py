"""faiss ``refresh=async``: the stale index serves until the swap, staleness, the sync oracle, resume, bad options."""

from __future__ import annotations

import copy
import json
import shutil
import threading

import pytest
import torch

from negmine import Trainer, hookimpl
from negmine.errors import ConfigError, PluginError
from negmine.generator import NegativeKind
from negmine.plugins import get_plugin_manager
from negmine_faiss.generator import FaissNegatives
from negmine_random.generator import RandomNegatives
from negmine_toy.task import build_toy

CPU = torch.device("cpu")
SIDES = [0, 1]


@pytest.fixture()
def toy():
    return build_toy("small", seed=0)


def nudge(model, seed):
    """One fake optimiser step: every weight moves a little."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def contents(gen):
    """{side: (the index's vectors, the cache)} of a generator's serving index."""
    out = {}
    for side, si in gen.indexes.items():
        out[side] = (torch.from_numpy(si.index.reconstruct_n(0, si.index.ntotal)), si.cache.values)
    return out


class Gated(FaissNegatives):
    """Background builds wait for ``gate``; records the worker's thread counts; can fail on demand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.threads_seen: list[tuple[int, int]] = []

    def build(self, model, data, device, sides, sample):
        if threading.current_thread() is not threading.main_thread():
            import faiss

            self.threads_seen.append((torch.get_num_threads(), faiss.omp_get_max_threads()))
            assert self.gate.wait(30)
            if self.fail:
                raise RuntimeError("disk on fire")
        return super().build(model, data, device, sides, sample)


def start(gen, task):
    """The stage start: a synchronous build from the current weights at step 0."""
    gen.last_refresh = gen.built_from = 0
    gen.refresh(task.model, task.train, CPU, SIDES)


def test_stale_index_serves_until_the_lagged_swap_and_equals_the_sync_oracle(toy):
    opts = dict(refresh_every=3, recall_sample=64, k=2)
    gen = Gated(FaissNegatives.Options(refresh="async", async_lag=2, async_threads=0, **opts), seed=3)
    oracle = FaissNegatives(FaissNegatives.Options(**opts), seed=3)  # sync, rebuilt from the same snapshots
    model = toy.model
    start(gen, toy)
    oracle.refresh(model, toy.train, CPU, SIDES)
    first = gen.indexes
    snapshot = None
    for step in range(1, 9):
        nudge(model, step)
        swapped = gen.advance_async(step, model, toy.train, CPU, SIDES)
        if step in (3, 6):  # a refresh point: the build starts, from these weights
            assert gen.pending is not None and gen.pending.built_from == step
            snapshot = copy.deepcopy(model)
        if step in (3, 4):
            assert not swapped and gen.indexes is first and gen.built_from == 0  # the stale index serves
        if step == 4:
            gen.pending.thread.join()  # finished, but with a lag the swap waits for step 5
            assert gen.indexes is first
        if step in (5, 8):
            assert swapped and gen.built_from == step - 2 and gen.refreshes == (2 if step == 5 else 3)
            oracle.refresh(snapshot, toy.train, CPU, SIDES)
            got, want = contents(gen), contents(oracle)
            for side in SIDES:
                assert torch.equal(got[side][0], want[side][0]) and torch.equal(got[side][1], want[side][1])
            assert gen.quality == oracle.quality  # the same recall sample, the same measurement
            assert gen.telemetry()["faiss/refresh_s"] > 0 and "faiss/refresh_wait_s" in gen.telemetry()
    assert gen.threads_seen == [(torch.get_num_threads(), torch.get_num_threads())] * 2  # async_threads=0: inherit
    gen.close()
    assert gen.pending is None


def test_without_a_lag_the_swap_comes_when_ready_and_at_the_latest_at_the_next_refresh(toy):
    gen = Gated(FaissNegatives.Options(refresh="async", refresh_every=3, recall_sample=0))
    model, main_threads = toy.model, torch.get_num_threads()
    start(gen, toy)
    first = gen.indexes
    gen.gate.clear()  # the next background build blocks
    gen.advance_async(3, model, toy.train, CPU, SIDES)
    for step in (4, 5):
        assert not gen.advance_async(step, model, toy.train, CPU, SIDES) and gen.indexes is first
    threading.Timer(0.3, gen.gate.set).start()
    assert gen.advance_async(6, model, toy.train, CPU, SIDES)  # the refresh point waits for the build...
    assert gen.built_from == 3 and gen.refresh_wait_seconds >= 0.2
    assert gen.pending is not None and gen.pending.built_from == 6  # ...then starts the next one
    gen.pending.thread.join()
    assert gen.advance_async(7, model, toy.train, CPU, SIDES) and gen.built_from == 6  # ready: swapped at once
    assert gen.threads_seen == [(1, 1), (1, 1)]  # async_threads=1, in the worker only
    assert torch.get_num_threads() == main_threads  # the training thread's count is untouched


def test_a_failed_background_build_raises_at_the_swap(toy):
    gen = Gated(FaissNegatives.Options(refresh="async", refresh_every=2, async_lag=1, recall_sample=0))
    start(gen, toy)
    gen.fail = True
    gen.advance_async(2, toy.model, toy.train, CPU, SIDES)
    with pytest.raises(PluginError, match="background index build from the weights of step 2 failed: "
                                          "RuntimeError: disk on fire"):
        gen.advance_async(3, toy.model, toy.train, CPU, SIDES)


class DelayedSync(FaissNegatives):
    """The oracle of refresh=async with async_lag=LAG: synchronous, but each rebuild uses a copy of the model taken
    at the refresh point and is installed LAG steps later."""

    LAG = 2

    @hookimpl
    def negmine_step_end(self, trainer, step, metrics):
        stage_done = trainer.step_in_stage >= trainer.stage.steps
        saved = getattr(self, "saved", None)
        if saved is not None and step - saved[0] >= self.LAG:
            self.refresh(saved[1], trainer.task.train, trainer.device, self._sides_of(trainer.model))
            self.saved = None
        if self._due(step) and not stage_done:
            self.last_refresh = step
            self.saved = (step, copy.deepcopy(trainer.model))
        log_line = step % trainer.config.log_every == 0 or stage_done
        if self._unlogged and log_line:
            metrics.update(self.telemetry())
            self._unlogged = False


class Interrupted(Exception):
    pass


class Crashing(FaissNegatives):
    crash_at: int | None = None

    @hookimpl
    def negmine_step_end(self, trainer, step, metrics):
        super().negmine_step_end(trainer, step, metrics)
        if Crashing.crash_at == step:
            Crashing.crash_at = None
            raise Interrupted


def _config(steps, faiss, **extra):
    return {"steps": steps, "negatives": ["random", "faiss"], "device": "cpu", "eval_size": 50, "log_every": 1,
            "checkpoint_every": 0, "generators": {"faiss": {"refresh_every": 3, "recall_sample": 32, **faiss}},
            **extra}


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir):
    return {m["step"]: m["loss"] for m in _metrics(run_dir) if "loss" in m}


def test_training_with_a_lag_equals_the_delayed_sync_oracle_and_logs_staleness(tmp_path):
    pm = get_plugin_manager()
    async_cfg = _config(10, {"refresh": "async", "async_lag": 2, "async_threads": 0})
    Trainer(build_toy("small", seed=0), async_cfg, plugins=pm, generators=[RandomNegatives, FaissNegatives],
            run_dir=tmp_path / "async").fit()
    Trainer(build_toy("small", seed=0), _config(10, {}), plugins=pm, generators=[RandomNegatives, DelayedSync],
            run_dir=tmp_path / "oracle").fit()
    assert _losses(tmp_path / "async") == _losses(tmp_path / "oracle")  # exactly: deterministic
    lines = {m["step"]: m for m in _metrics(tmp_path / "async") if "loss" in m}
    # index from step 0 mines steps 1-5, swapped at the end of 5 (3 + lag 2) for the build from step 3; then 8 (6)
    assert {s: m["faiss/staleness"] for s, m in lines.items()} == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 2, 7: 3, 8: 4,
                                                                     9: 2, 10: 3}
    assert {s: m["faiss/refreshes"] for s, m in lines.items() if "faiss/refreshes" in m} == {1: 1, 5: 2, 8: 3}
    assert all(lines[s]["faiss/refresh_s"] > 0 and lines[s]["faiss/refresh_wait_s"] >= 0 for s in (5, 8))
    sync_lines = [m for m in _metrics(tmp_path / "oracle") if "loss" in m]
    assert not any("faiss/staleness" in m or "faiss/refresh_wait_s" in m for m in sync_lines)  # sync: as before


def test_resume_rebuilds_synchronously_and_keeps_the_schedule(tmp_path):
    pm = get_plugin_manager()
    gens = [RandomNegatives, Crashing]
    config = _config(10, {"refresh": "async", "async_lag": 2}, checkpoint_every=4)
    Crashing.crash_at = 5
    with pytest.raises(Interrupted):  # the checkpoint of step 4 was written with the build from step 3 in flight
        Trainer(build_toy("small", seed=0), config, plugins=pm, generators=gens, run_dir=tmp_path / "a").fit()
    state = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] == 4 and state["generators"]["faiss"]["last_refresh"] == 3
    runs = []
    for name in ("b", "c"):  # resumed twice from the same checkpoint
        shutil.copytree(tmp_path / "a", tmp_path / name)
        Trainer(build_toy("small", seed=0), config, plugins=pm, generators=gens, run_dir=tmp_path / name,
                resume=True).fit()
        runs.append({m["step"]: m for m in _metrics(tmp_path / name) if "loss" in m})
    b, c = runs
    assert sorted(b) == list(range(1, 11))
    assert {s: b[s]["loss"] for s in b} == {s: c[s]["loss"] for s in c}  # the resumed part is deterministic too
    # rebuilt from the step-4 weights on resume (staleness restarts at 0); launch at 6 (3 + 3), swapped at 8
    assert {s: b[s]["faiss/staleness"] for s in range(5, 11)} == {5: 0, 6: 1, 7: 2, 8: 3, 9: 2, 10: 3}


def test_contract_checker_without_hooks():
    """No lifecycle hooks: the first mine() builds synchronously, later ones follow the async schedule."""
    from negmine.testing import check_generator, make_task

    opts = FaissNegatives.Options(refresh="async", refresh_every=1, async_lag=1)
    out = check_generator(FaissNegatives, make_task(), options=opts)
    assert set(out) == {0, 1} and all(n.kind == NegativeKind.DATASET for n in out.values())


def test_bad_async_options_are_one_config_error(tmp_path, monkeypatch):
    def problems(**faiss):
        with pytest.raises(ConfigError) as err:
            Trainer(build_toy("small"), {"negatives": ["faiss"], "generators": {"faiss": faiss}},
                    plugins=get_plugin_manager(), run_dir=tmp_path)
        return str(err.value)

    text = problems(refresh="asynch", async_threads=-1, async_lag=0)
    assert "3 problems" in text and "did you mean 'async'" in text and "async_threads" in text and "async_lag" in text
    assert "refresh_every > 0" in problems(refresh="async", refresh_every=0)
    assert "async_lag (5) exceeds refresh_every (4)" in problems(refresh="async", refresh_every=4, async_lag=5)
    assert "needs refresh=async" in problems(async_lag=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    text = problems(refresh="async", refresh_every=0)
    assert "refresh_every > 0" in text and "not supported under torchrun" in text and "refresh=sync" in text
    FaissNegatives.Options(refresh="sync")  # sync is fine under torchrun
