"""The README's Python examples are valid Python (each ```python block parses)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_python_example_in_the_readme_parses() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        ast.parse(block)  # a SyntaxError names the line
    text = "\n".join(blocks)
    assert "AsyncJanus.from_url" in text and "await w.run(" in text


def test_every_image_the_readme_shows_is_a_png_in_the_repository() -> None:
    """The load-benchmark section shows a report's plots; each one is committed and a PNG."""
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert any("bench-outage" in i for i in images)
    for image in images:
        data = (README.parent / image).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", image


def test_every_shipped_scenario_and_command_the_readme_names_exists() -> None:
    text = README.read_text()
    scenarios = README.parent / "bench" / "scenarios"
    for name in re.findall(r"bench/scenarios/([a-z-]+)\.yaml", text):
        assert (scenarios / f"{name}.yaml").is_file(), name
    for name in ("steady", "flash-sale", "noisy-tenant", "upstream-outage", "fleet-restart"):
        assert f"`{name}`" in text, name
