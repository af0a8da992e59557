"""A broken generator stops training with one message naming it, its module and what was expected, never a torch
traceback (issue 17, item 7)."""

import textwrap

import pytest

from negmine.cli import main

BROKEN = textwrap.dedent('''
    import torch
    from negmine import NegativeGenerator, Negatives, hookimpl


    class ListNegatives(NegativeGenerator):
        """Returns a list instead of a dict."""
        name = "returns-list"

        def mine(self, ctx):
            return [Negatives.from_batch(torch.zeros(len(ctx.batch), 1, dtype=torch.long), torch.zeros(len(ctx.batch), 1))]


    class NotNegatives(NegativeGenerator):
        """Returns a tensor where a Negatives record belongs."""
        name = "returns-tensor"

        def mine(self, ctx):
            return {1: torch.zeros(len(ctx.batch), 1)}


    class WrongShape(NegativeGenerator):
        """Synthesized side-b inputs of 10 features where the toy task's have 24."""
        name = "wrong-shape"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {1: Negatives.from_inputs(torch.zeros(b, 1, 10, device=ctx.device), torch.zeros(b, 1))}


    class WrongLeading(NegativeGenerator):
        """Synthesized inputs without the K axis."""
        name = "wrong-leading"

        def mine(self, ctx):
            b = len(ctx.batch)
            return {1: Negatives.from_inputs(torch.zeros(b, 24), torch.zeros(b, 1))}


    class Raises(NegativeGenerator):
        """A bug inside mine()."""
        name = "raises"

        def mine(self, ctx):
            return {0: ctx.scores[0][:, 10_000]}


    @hookimpl
    def negmine_register_generators():
        return [ListNegatives, NotNegatives, WrongShape, WrongLeading, Raises]
''')


@pytest.mark.parametrize("name, expected", [
    ("returns-list", "mine() must return a dict {side: negmine.Negatives}"),
    ("returns-tensor", "mine() returned a Tensor for side 1; expected a negmine.Negatives"),
    ("wrong-shape", "that the model cannot encode: float32[10] per negative, while the task's side-1 inputs "
                    "are float32[24] per item"),
    ("wrong-leading", "inputs must be tensors (or a tuple, list or dict of them) with leading axes [B, K] = [32, 1]"),
    ("raises", "raised IndexError in mine(): index 10000 is out of bounds"),
])
def test_a_broken_generator_is_named_with_what_was_expected(name, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text(BROKEN)
    code = main(["-p", "broken.py", "train", "--task", "toy", "--profile", "small", "--steps", "2", "-n", "random",
                 "-n", name, "--run-dir", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    # one error line (wrong-shape is warned about first: its inputs cannot join the batch's in one pass)
    assert "Traceback" not in err and [line.startswith("error: ") for line in err.strip().splitlines()][-1:] == [True]
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err
    assert f"generator {name!r} ({tmp_path / 'broken.py'}: " in err, err  # the name and the plugin's file
    assert expected in err, err
    if name == "raises":
        assert "broken.py:" in err  # the line of the plugin that raised
