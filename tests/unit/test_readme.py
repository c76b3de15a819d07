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
