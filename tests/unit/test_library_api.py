"""The library stands without its command line: building a task and a config from a raw dict is public API, and
nothing outside ``negmine/cli`` needs the CLI's modules (issue 17, item 13)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_imports(path: Path) -> list[str]:
    """``negmine.cli...`` imports of a module, as "module: names"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("negmine.cli"):
            found.append(f"{node.module}: {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("negmine.cli")]
    return found


def test_only_the_cli_imports_the_cli():
    library = [p for p in (ROOT / "negmine").rglob("*.py") if "cli" not in p.relative_to(ROOT / "negmine").parts]
    offenders = {str(p.relative_to(ROOT)): cli_imports(p) for p in library if cli_imports(p)}
    assert not offenders, offenders
    # plugins, examples and benchmarks may ask the running command for its plugin manager, and nothing else
    others = [p for d in ("plugins", "examples", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    offenders = {str(p.relative_to(ROOT)): imports for p in others
                 if (imports := [i for i in cli_imports(p) if i != "negmine.cli: plugin_manager"])}
    assert not offenders, offenders


def test_an_experiment_runs_from_python_without_click(tmp_path):
    (tmp_path / "exp.toml").write_text(textwrap.dedent("""
        task = "toy"
        profile = "small"
        seeds = [0]
        [settings]
        eval_size = 20
        [[methods]]
        name = "Random"
        negatives = ["random"]
        steps = 2
    """))
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from negmine import build_task, build_task_config, get_plugin_manager
        from negmine.experiment import load_experiment, run_experiment
        from negmine.trainer import PlainReporter

        pm = get_plugin_manager()
        raw = {{"task": "toy", "profile": "small", "steps": 3}}
        task = build_task(pm, raw)
        config = build_task_config(pm, task, raw)
        assert raw["profile"] == "small" and config.stages[0].steps == 3 and config.batch_size == 32
        run_experiment(pm, load_experiment({str(tmp_path / 'exp.toml')!r}), Path({str(tmp_path / 'out')!r}),
                       lambda: PlainReporter(quiet=True), log=lambda m: None)
        loaded = sorted(m for m in sys.modules if m == "click" or m.startswith(("click.", "negmine.cli")))
        print("loaded:", loaded)
    """)
    env = {"NEGMINE_PLUGINS": "toy,random", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": ":".join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout, proc.stdout
    assert (tmp_path / "out" / "results.md").is_file()
