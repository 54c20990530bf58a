"""The package's shape, checked from its imports: the folders of README's "Architecture" section are what the
code is, and the kernel machinery has one door."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

RUNNER = Path(__file__).resolve().parents[1] / "runner"
KERNELS = RUNNER / "engine" / "kernels"
# what only the kernel folder may import: its inner modules, and the libraries that start and fork kernels
KERNEL_MACHINERY = ("runner.engine.kernels.", "jupyter_client", "ipykernel")


def imported_modules(path: Path) -> set[str]:
    """The modules a file imports (`from a.b import c` counts as a.b: c may be a name or a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_only_the_kernel_folder_imports_the_kernel_machinery():
    outside = [path for path in RUNNER.rglob("*.py") if KERNELS not in path.parents]
    offenders = {
        str(path.relative_to(RUNNER.parent)): sorted(
            name for name in imported_modules(path) if name.startswith(KERNEL_MACHINERY)
        )
        for path in outside
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_only_the_commands_print_and_exit():
    """The library returns records and raises; the commands are the one place that prints and exits."""
    commands = RUNNER / "commands"
    found = []
    for path in RUNNER.rglob("*.py"):
        if commands in path.parents or path.name == "__main__.py" or KERNELS in path.parents:
            continue  # the kernel server is a process of its own: its main() talks on its pipes
        if path == RUNNER / "github" / "precheck.py":
            continue  # a process of its own too, run before anything is installed (no rich, no commands)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = node.func if isinstance(node, ast.Call) else None
            if isinstance(called, ast.Name) and called.id in ("print", "exit"):
                found.append(f"{path.relative_to(RUNNER.parent)}:{node.lineno} {called.id}()")
            elif isinstance(called, ast.Attribute) and called.attr in ("exit", "_exit"):
                found.append(f"{path.relative_to(RUNNER.parent)}:{node.lineno} {ast.unparse(called)}()")
    assert found == []


def test_the_package_folders_are_the_readme_architecture():
    readme = (RUNNER.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    folders = sorted(p.name for p in RUNNER.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    missing = [name for name in folders if f"runner/{name}/" not in section]
    assert missing == [], f"README's Architecture section does not describe runner/{missing}"


# folder -> the folders it must not import from: the engine knows nothing of what comes after a stage
LAYERS = {
    "engine": ("runner.production", "runner.report", "runner.github", "runner.commands", "runner.replay"),
    "production": ("runner.github", "runner.commands", "runner.replay"),
    "report": ("runner.github", "runner.commands", "runner.replay"),
    "nb": ("runner.engine", "runner.production", "runner.report", "runner.github", "runner.commands"),
}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_imports_point_one_way(folder):
    found = {
        str(path.relative_to(RUNNER.parent)): sorted(
            name for name in imported_modules(path) if name.startswith(LAYERS[folder])
        )
        for path in (RUNNER / folder).rglob("*.py")
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_each_command_family_declares_the_commands_it_adds(capsys):
    """`retrain X` builds the parsers of X's family alone (commands/__init__.py): a family must declare in
    COMMANDS exactly the commands it adds, and a command's parser is the same built alone or with all."""
    import argparse

    from runner.commands import FAMILIES, build_parser, main
    from runner.commands.settings import Settings

    def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        found = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        return dict(found[0].choices)

    settings = Settings.from_environ({})
    every = commands_of(build_parser(settings))
    for family in FAMILIES:
        alone = argparse.ArgumentParser().add_subparsers()
        family.add_parsers(alone, settings)
        assert tuple(alone.choices) == family.COMMANDS, family.__name__
        for name in family.COMMANDS:
            built = commands_of(build_parser(settings, name))
            assert list(built) == list(family.COMMANDS)
            assert built[name].format_help() == every[name].format_help()
    assert sorted(every) == sorted(name for family in FAMILIES for name in family.COMMANDS)
    for argv in (["--help"], ["nonsense"]):  # every command listed, or named as the choices
        with pytest.raises(SystemExit):
            main(argv)
        said = capsys.readouterr()
        assert all(name in said.out + said.err for name in every), argv
