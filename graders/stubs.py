"""One source for reference and stub: nbgrader's solution markers, and the README's API block.

`solutions/<slug>/<slug>.py` is the whole module. Each block between `### BEGIN SOLUTION` and
`### END SOLUTION` becomes `raise NotImplementedError(...)` in the learner's stub, and the README's
API section is rendered from the same file, so stub, README and reference cannot disagree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

from graders.curriculum import kit_root

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
API_BLOCK = re.compile(r"(<!-- BEGIN API[^\n]*-->\n)(.*?)(<!-- END API -->)", re.S)


class StubError(ValueError):
    """A solution file whose markers cannot make a stub."""


def _functions(tree: ast.Module) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function, outermost first."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((child.lineno, child.end_lineno, name))
                visit(child, f"{name}.")

    visit(tree, "")
    return found


def make_stub(source: str, slug: str) -> str:
    """The learner's stub: every solution block replaced by a pointer to the exercise README."""
    functions = _functions(ast.parse(source))
    lines, out, i = source.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() != BEGIN:
            out.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END), None)
        if end is None:
            raise StubError(f"{slug}: line {i + 1} opens a solution block that never ends")
        owners = [name for first, last, name in functions if first <= i + 1 <= last]
        if not owners:
            raise StubError(f"{slug}: the solution block at line {i + 1} is not inside a function")
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        message = f"{owners[-1]}: not implemented yet; see exercises/{slug}/README.md"
        out += [f"{indent}# YOUR CODE HERE", *_raise(indent, message)]
        i = end + 1
    return "\n".join(out) + "\n"


def _raise(indent: str, message: str) -> list[str]:
    """`raise NotImplementedError(message)`, laid out as ruff's formatter lays it out."""
    line = f'{indent}raise NotImplementedError("{message}")'
    if len(line) <= 100:
        return [line]
    if len(indent) + len(message) + 6 <= 100:
        return [f"{indent}raise NotImplementedError(", f'{indent}    "{message}"', f"{indent})"]
    head, tail = message.split(" see ", 1)  # two literals, which Python joins
    return [
        f"{indent}raise NotImplementedError(",
        f'{indent}    "{head} "',
        f'{indent}    "see {tail}"',
        f"{indent})",
    ]


def _header_end(lines: list[str], start: int) -> int:
    """The line (1-based) that closes the signature starting at line `start`."""
    depth = 0
    for number in range(start, len(lines) + 1):
        code = lines[number - 1].split("#")[0].rstrip()
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        if depth == 0 and code.endswith(":"):
            return number
    return start


def _is_api(method: ast.FunctionDef) -> bool:
    """Public methods, the constructor and operators (dunders) belong to the API."""
    return not method.name.startswith("_") or method.name.endswith("__")


def _signature_and_docstring(node: ast.FunctionDef | ast.ClassDef, lines: list[str]) -> str:
    """A definition's source up to the end of its docstring: decorators, signature and docstring."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    has_doc = ast.get_docstring(node) is not None
    last = node.body[0].end_lineno if has_doc else _header_end(lines, node.lineno)
    text = "\n".join(lines[first - 1 : last]) + ("" if has_doc else " ...")
    if isinstance(node, ast.ClassDef):
        methods = [n for n in node.body if isinstance(n, ast.FunctionDef) and _is_api(n)]
        text += "".join("\n\n" + _signature_and_docstring(m, lines) for m in methods)
    return text


def api_source(source: str, slug: str) -> str:
    """The public API (names in `__all__`) as Python: signatures and docstrings, in file order."""
    tree = ast.parse(source)
    names = next(
        (
            ast.literal_eval(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "__all__" for t in n.targets)
        ),
        None,
    )
    if names is None:
        raise StubError(f"{slug}: the reference must list its public API in __all__")
    defs = [
        n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name in names
    ]
    missing = set(names) - {n.name for n in defs}
    if missing:
        raise StubError(f"{slug}: __all__ names {sorted(missing)} which the module does not define")
    lines = source.splitlines()
    return "\n\n\n".join(_signature_and_docstring(n, lines) for n in defs) + "\n"


def render_readme(readme: str, api: str, slug: str) -> str:
    if not API_BLOCK.search(readme):
        raise StubError(
            f"{slug}: README.md has no '<!-- BEGIN API -->' ... '<!-- END API -->' block"
        )
    return API_BLOCK.sub(lambda m: f"{m[1]}```python\n{api}```\n{m[3]}", readme, count=1)


def sync(check: bool = False, slugs: Iterable[str] | None = None) -> list[Path]:
    """Regenerate every stub and README API block (or those of `slugs`); return the files changed
    (or stale)."""
    changed = []
    for solution in sorted((kit_root() / "solutions").glob("*/*.py")):
        slug = solution.parent.name
        if solution.stem != slug or (slugs is not None and slug not in slugs):
            continue
        source = solution.read_text(encoding="utf-8")
        folder = kit_root() / "exercises" / slug
        wanted = {folder / f"{slug}.py": make_stub(source, slug)}
        readme = folder / "README.md"
        if readme.is_file():
            text = readme.read_text(encoding="utf-8")
            wanted[readme] = render_readme(text, api_source(source, slug), slug)
        else:  # reported as stale; written once the README exists
            changed.append(readme)
        for path, text in wanted.items():
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                changed.append(path)
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text, encoding="utf-8")
    return changed
