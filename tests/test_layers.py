"""The layering rule: events/ and processors/ are pure; only streams/ does IO."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IO_MODULES = {
    "faust",
    "mode",
    "kafka",
    "aiokafka",
    "confluent_kafka",
    "aiohttp",
    "httpx",
    "requests",
    "socket",
    "time",
    "random",
    "asyncio",
    "logging",
    "subprocess",
    "os",
    "sys",
    "io",
    "pathlib",
    "yaml",
    "rocksdict",
}
ALLOWED = {"events": {"events"}, "processors": {"events", "processors"}}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_pure_packages_import_no_io_and_point_one_way(package: str) -> None:
    project = {"events", "processors", "streams"}
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        roots = imported_roots(path)
        assert not roots & IO_MODULES, f"{path.relative_to(ROOT)} imports IO: {roots & IO_MODULES}"
        inward = roots & project
        assert inward <= ALLOWED[package], (
            f"{path.relative_to(ROOT)} imports {inward - ALLOWED[package]}"
        )


def test_the_rule_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom aiokafka import AIOKafkaConsumer\nfrom streams import cli\n")
    assert imported_roots(bad) == {"time", "aiokafka", "streams"}
