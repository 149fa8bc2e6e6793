"""`voicecrm scenarios validate|schema`: check scenario files and publish their schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from voicecrm.errors import ScenarioInvalid
from voicecrm.scenarios.library import ScenarioLibrary, json_schema_text, scenario_files


def cmd_validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    missing = [p for p in paths if not p.exists()]
    if missing:
        for path in missing:
            print(f"{path}: no such file or folder", file=sys.stderr)
        return 2
    files = scenario_files(paths)
    if not files:
        print("no .yaml or .yml files found", file=sys.stderr)
        return 2
    try:
        library = ScenarioLibrary.load(paths)
    except ScenarioInvalid as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        print(f"{len(err.issues)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    for name, scenario in sorted(library.scenarios.items()):
        print(f"ok  {name}: {len(scenario.steps)} steps")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    text = json_schema_text()
    if args.output and args.output != "-":
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("scenarios", help="scenario files: validate, JSON Schema")
    commands = group.add_subparsers(dest="scenarios", required=True)
    validate = commands.add_parser("validate", help="check scenario files; exit 1 on problems")
    validate.add_argument("paths", nargs="+", help="files or folders")
    validate.set_defaults(plain_func=cmd_validate)
    schema = commands.add_parser("schema", help="print the JSON Schema of scenario files")
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(plain_func=cmd_schema)
