"""A new project from a template: the files planned, the folder checked, then written, never over a file.

template name -> Template (template.json) -> the files: common + the template's own + its data cut from
the package + requirements.txt -> the folder may hold anything but those -> each written as a new file
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner.errors import UsageError, did_you_mean
from runner.files import create_new_bytes
from runner.init import data
from runner.init.source import RunnerSource
from runner.secrets import Redactor

TEMPLATES = Path(__file__).resolve().parent / "templates"
COMMON = "common"
MANIFEST = "template.json"
REQUIREMENTS = PurePosixPath("requirements.txt")
SKIPPED = {"__pycache__", ".ipynb_checkpoints"}  # left by running a template's notebooks in place


@dataclass(frozen=True)
class Template:
    name: str
    title: str  # one line: what the project predicts, from what
    key_metric: str  # as people call it, with its direction: "ROC AUC, higher is better"
    folder: Path
    data: data.DataSpec


def template_names() -> list[str]:
    return sorted(path.name for path in TEMPLATES.iterdir() if (path / MANIFEST).is_file())


def load_template(name: str) -> Template:
    """The template called `name`; a usage error naming those there are."""
    folder = TEMPLATES / name
    if name == COMMON or not (folder / MANIFEST).is_file():
        known = template_names()
        fix = did_you_mean(name, known) or f"one of: {', '.join(known)}"
        raise UsageError(f"no template '{name}' ({fix})")
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return Template(
        name=name,
        title=str(manifest["title"]),
        key_metric=str(manifest["key_metric"]),
        folder=folder,
        data=data.DataSpec.from_json(manifest["data"]),
    )


def project_files(template: Template, runner: RunnerSource) -> dict[PurePosixPath, bytes]:
    """Every file of the new project, by its path in the project."""
    files = {**_tree(TEMPLATES / COMMON), **_tree(template.folder)}
    files.pop(PurePosixPath(MANIFEST), None)
    files.update(data.cut(template.data))
    note = (
        "# The runner, installed as a dependency (`make install`, and the workflows in GitHub Actions).\n"
        "# A git URL pinned to a commit or tag: notebook-retrain @ git+https://github.com/OWNER/REPO@REF\n"
        "# A folder on this machine (local use only): notebook-retrain @ file:///path/to/notebook-retrain\n"
    )
    files[REQUIREMENTS] = f"{note}{runner.requirement}\n".encode()
    return dict(sorted(files.items()))


def _tree(folder: Path) -> dict[PurePosixPath, bytes]:
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not SKIPPED & set(relative.parts):
            found[PurePosixPath(relative.as_posix())] = path.read_bytes()
    return found


def conflicts(target: Path, files: dict[PurePosixPath, bytes]) -> list[str]:
    """The planned paths that something in `target` already takes (a file, a folder, a link)."""
    taken = []
    for relative in files:
        for depth in range(1, len(relative.parts) + 1):
            here = target.joinpath(*relative.parts[:depth])
            is_folder_on_the_way = depth < len(relative.parts) and here.is_dir() and not here.is_symlink()
            if (here.exists() or here.is_symlink()) and not is_folder_on_the_way:
                taken.append(PurePosixPath(*relative.parts[:depth]).as_posix())
                break
    return sorted(set(taken))


def create_project(target: Path, files: dict[PurePosixPath, bytes], redact: Redactor) -> None:
    """Write `files` under `target`, refusing (before writing anything) when one of their paths is taken."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file, not a folder: name a new or empty folder")
    taken = conflicts(target, files)
    if taken:
        shown = ", ".join(taken[:8]) + (f" and {len(taken) - 8} more" if len(taken) > 8 else "")
        raise UsageError(
            f"{target} is not empty and holds {len(taken)} of the files a new project has: {shown}. "
            "Nothing was written: choose an empty folder, or move those away first"
        )
    for relative, content in files.items():
        try:
            create_new_bytes(target.joinpath(*relative.parts), content, redact=redact)
        except FileExistsError as error:  # created since the check above, by someone else
            raise UsageError(
                f"{target / relative} appeared while the project was written: left as it is"
            ) from error
