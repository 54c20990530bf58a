"""`retrain init [DIR] --template NAME`: a new project that runs at once, on real data a package ships."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context
from runner.errors import EXIT_OK

COMMANDS = ("init",)  # the commands add_parsers adds


def add_parsers(commands: Any, settings: Settings) -> None:
    from runner.init.scaffold import load_template, template_names

    names = template_names()
    described = "; ".join(f"{name}: {load_template(name).title}" for name in names)
    init = commands.add_parser(
        "init",
        help="create a new project from a template, ready to run",
        description="Create a new project (pipeline.yaml, notebooks, data contract, data, workflows, "
        "Makefile) in DIR. It refuses a folder that holds any file the project would write, and never "
        "overwrites one.",
    )
    init.add_argument("folder", nargs="?", type=Path, default=Path("."), metavar="DIR", help="default: here")
    init.add_argument(
        "--template", required=True, choices=names, help=f"what the project predicts ({described})"
    )
    init.add_argument(
        "--runner",
        metavar="REQUIREMENT",
        default=None,
        help="how the project installs the runner, a line of requirements.txt (default: the way this "
        "runner was installed; for GitHub Actions a git URL: "
        '"notebook-retrain @ git+https://github.com/OWNER/REPO@REF")',
    )
    init.set_defaults(handler=command_init)


def command_init(args: argparse.Namespace, ctx: Context) -> int:
    from runner.init import data, scaffold
    from runner.init.source import local_folder, runner_source

    template = scaffold.load_template(args.template)
    source = runner_source(args.runner)
    files = scaffold.project_files(template, source)
    target: Path = args.folder
    scaffold.create_project(target, files, ctx.redact)

    n_drops = sum(1 for path in files if str(path).startswith(str(Path(template.data.drops).parent) + "/"))
    spec = template.data
    ctx.say(f"created a {template.name} project in {target}: {template.title}")
    ctx.say(f"  {len(files)} files; key metric {template.key_metric}")
    ctx.say(
        f"  data: {spec.file.rsplit('/', 1)[-1]} from {spec.distribution} {data.source_version(spec)}: "
        f"the history up to {spec.history_until:%d %b %Y} and {n_drops} monthly drops (data/README.md)"
    )
    ctx.say(f"  the runner, as a dependency (requirements.txt): {source.requirement}")
    if source.local:
        ctx.say(
            f"  note: {local_folder(source)} is a folder of this machine: GitHub Actions cannot install the "
            "runner from there. Before pushing, write a git URL in requirements.txt "
            "(notebook-retrain @ git+https://github.com/OWNER/REPO@REF), or pass it with --runner.",
            style="yellow",
        )
    here = Path(os.path.relpath(target.resolve(), Path.cwd()))
    steps = [] if here == Path(".") else [f"cd {shlex.quote(str(here))}"]
    steps += [
        "retrain check                        # validates the pipeline, runs nothing",
        "retrain run                          # the first run: a model, its gates, the first champion",
        "retrain replay --drops data/drops    # the next months, one drop at a time",
        "retrain models                       # the registered versions and their key metric",
    ]
    ctx.say("next:\n" + "\n".join(f"  {step}" for step in steps))
    ctx.say(
        "README.md in the project says what each file is for and how to change the data, contract, "
        "metric and model."
    )
    return EXIT_OK
