"""What the specs and the CLI read from an exercise README: its hints and its API block."""

from __future__ import annotations

import ast
import re
from functools import cache

from graders.curriculum import kit_root
from graders.stubs import API_BLOCK

HINT = re.compile(r"^- `(test_\w+)`:?\s*(.*)$")


def _text(slug: str) -> str:
    path = kit_root() / "exercises" / slug / "README.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match[1] if match else ""


@cache
def hints(slug: str) -> dict[str, str]:
    """Spec name -> hint, from the README's `## Hints` bullets (continuation lines are indented)."""
    found: dict[str, str] = {}
    current = None
    for line in section(_text(slug), "Hints").splitlines():
        if match := HINT.match(line):
            current = match[1]
            found[current] = match[2].strip()
        elif current and line.startswith("  ") and line.strip():
            found[current] += " " + line.strip()
        else:
            current = None
    return found


@cache
def api(slug: str) -> dict[str, str]:
    """Public name -> its signature as the README's API block gives it."""
    match = API_BLOCK.search(_text(slug))
    if not match:
        return {}
    code = match[2].strip().removeprefix("```python").removesuffix("```")
    result = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef):
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            result[node.name] = f"def {node.name}({ast.unparse(node.args)}){returns}"
        elif isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if getattr(n, "name", "") == "__init__"), None)
            args = ast.unparse(init.args).removeprefix("self").lstrip(", ") if init else ""
            result[node.name] = f"{node.name}({args})  # class"
    return result
