"""The architecture's rules, checked by tools rather than remembered.

The import rules of ../shared/ARCHITECTURE.md are import-linter contracts in pyproject.toml;
`lint-imports` must keep them all. And every module must import on its own, in a fresh
interpreter with warnings as errors: a circular import, or a deprecation that would become
an error in a later release, shows up here instead of at a customer's first start.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import voicecrm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Modules that do something when imported, by design; each is exercised elsewhere.
RUN_ON_IMPORT = {
    "voicecrm.__main__": "runs the CLI (tests/test_cli_* run it)",
    "voicecrm.storage.migrations.env": "is Alembic's script, run by tests/test_migrations.py",
}


def all_modules() -> list[str]:
    found = {info.name for info in pkgutil.walk_packages(voicecrm.__path__, "voicecrm.")}
    return sorted({"voicecrm", *found} - set(RUN_ON_IMPORT))


def test_the_import_rules_hold() -> None:
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_package_of_the_architecture_is_a_regular_package() -> None:
    """A folder without `__init__.py` is a namespace package, which import-linter cannot
    see: its contracts would silently cover nothing."""
    folders = {
        p.parent
        for p in (ROOT / "voicecrm").rglob("*.py")
        if "migrations" not in p.parts and "__pycache__" not in p.parts
    }
    assert (
        sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()) == []
    )


# Run in one fresh interpreter: before each module, every voicecrm module is forgotten, so
# each is imported as if it were the first (a cycle among voicecrm modules, or a module
# leaning on one imported before it, fails), while third-party packages load only once.
_IMPORT_EACH_ALONE = """
import importlib, sys, traceback
failures = {}
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "voicecrm" or n.startswith("voicecrm.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except BaseException as err:
        failures[module] = "".join(traceback.format_exception_only(err)).strip()
for module, error in failures.items():
    print(f"{module}: {error}")
sys.exit(1 if failures else 0)
"""


def test_every_module_imports_on_its_own_with_warnings_as_errors() -> None:
    modules = all_modules()
    assert {
        "voicecrm.app",
        "voicecrm.api.server",
        "voicecrm.crm.contacts",
        "voicecrm.storage.migrate",
    } <= set(modules)
    # Two interpreters, each taking every other module: the suite otherwise waits about
    # 20 s for one to import some 200 modules afresh, while the second core idles.
    halves = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", _IMPORT_EACH_ALONE, *modules[start::2]],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        for start in (0, 1)
    ]
    outputs = [half.communicate(timeout=120)[0] for half in halves]
    assert [half.returncode for half in halves] == [0, 0], "".join(outputs)


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded once it has run `code`."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_command_line_is_parsed_without_importing_the_service() -> None:
    """`voicecrm --help` and the small commands must not pay for the web application,
    the carriers and the model client: seconds of imports."""
    heavy = ("voicecrm.app", "voicecrm.api", "voicecrm.telephony", "openai", "twilio")
    assert _loaded_after("from voicecrm.cli.main import parser; parser()", heavy) == []


def test_without_a_provider_configured_the_openai_client_is_never_imported() -> None:
    """Importing `openai` takes most of a second: a service or `voicecrm simulate` with
    no model and offline speech must not pay it at every start."""
    setup = (
        "import voicecrm.app, voicecrm.cli.simulate_command\n"
        "from voicecrm.agent.factory import language_model_from_settings\n"
        "from voicecrm.speech.factory import speech_to_text, text_to_speech\n"
        "assert language_model_from_settings(None, None) is None\n"
        "speech_to_text('auto', base_url=None, api_key=None)\n"
        "text_to_speech('auto', base_url=None, api_key=None)"
    )
    assert _loaded_after(setup, ("openai",)) == []
