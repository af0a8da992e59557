"""Plugin discovery, filtering, -p loading and error messages."""

import textwrap

import pytest

from negmine.errors import PluginError, UnknownNameError
from negmine.plugins import get_plugin_manager


def test_shipped_plugins_come_from_entry_points(plugin_manager):
    gens = plugin_manager.generators()
    for name in ("random", "hard-minibatch", "faiss"):
        assert name in gens
    assert "toy" in plugin_manager.tasks()
    info = plugin_manager.info["random"]
    assert info.origin == "entry point" and info.distribution == "negmine"


def test_unknown_name_suggests_the_closest(plugin_manager):
    with pytest.raises(UnknownNameError) as err:
        plugin_manager.generator("hard-minbatch")
    assert "Did you mean 'hard-minibatch'?" in str(err.value)
    assert "random" in str(err.value)


def test_block_and_allow_lists():
    pm = get_plugin_manager(environ={"NEGMINE_DISABLE_PLUGINS": "random"})
    assert "random" not in pm.generators() and "hard-minibatch" in pm.generators()
    pm = get_plugin_manager(environ={"NEGMINE_PLUGINS": "random,toy"})
    assert set(pm.generators()) == {"random"}
    assert set(pm.tasks()) == {"toy"}


PLUGIN = '''
import attrs
from negmine import NegativeGenerator, Negatives, hookimpl, option

class {cls}(NegativeGenerator):
    name = "{name}"

    @attrs.frozen
    class Options:
        k: int = option(1, "k", min=1)

    def mine(self, ctx):
        return {{}}

@hookimpl
def negmine_register_generators():
    return [{cls}]
'''


def test_local_file_plugin(tmp_path):
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN.format(cls="Mine", name="mine"))
    pm = get_plugin_manager([str(path)], environ={})
    assert "mine" in pm.generators()
    assert pm.info["my_plugin"].origin == "-p"


def test_duplicate_generator_names_name_both_classes(tmp_path):
    path = tmp_path / "dup.py"
    path.write_text(PLUGIN.format(cls="MyRandom", name="random"))
    pm = get_plugin_manager([str(path)], environ={})
    with pytest.raises(PluginError) as err:
        pm.generators()
    text = str(err.value)
    assert "negmine_random.generator.RandomNegatives" in text and "MyRandom" in text


def test_plugin_that_fails_to_import(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(PluginError) as err:
        get_plugin_manager([str(path)], environ={})
    assert "broken.py" in str(err.value) and "not_a_real_module_xyz" in str(err.value)


def test_plugin_with_a_misspelt_hook_is_rejected(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(textwrap.dedent("""
        from negmine import hookimpl

        @hookimpl
        def negmine_register_generator():
            return []
    """))
    with pytest.raises(PluginError, match="negmine_register_generator"):
        get_plugin_manager([str(path)], environ={})


def test_third_party_distribution_is_discovered(plugin_manager):
    """examples/custom_generator is installed as its own distribution by `make test`."""
    pytest.importorskip("negmine_example_generator")
    assert "memory-bank" in plugin_manager.generators()
    assert plugin_manager.info["memory-bank"].distribution == "negmine-example-generator"


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, negmine, negmine.cli; negmine.cli.main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_p_naming_an_installed_module_says_so_in_one_line(capsys):
    """Issue 17, item 12."""
    from negmine.cli import main

    assert main(["-p", "negmine_random", "plugins"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: -p negmine_random: the module is installed and already loaded from its entry point "
                   "'random' (distribution negmine); drop -p negmine_random\n")


def test_plugins_shows_option_bounds(capsys):
    from negmine.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("--random-k") and "int [1..]" in line for line in out.splitlines())
    assert any(line.startswith("--gan-random-p ") and "float [0.0..1.0]" in line for line in out.splitlines())


def test_make_context_gives_both_sides_inputs():
    import torch

    from negmine.testing import make_context, make_task

    task = make_task(8)
    ctx = make_context(torch.eye(4), task=task)
    first = task.train.batch(torch.arange(4))
    assert torch.equal(ctx.batch.a, first.a) and torch.equal(ctx.batch.b, first.b)
