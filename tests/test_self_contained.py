"""The tests and benchmarks read nothing outside the repository: a user's clone has nothing beside it.

Every Python file under tests/ and bench/ is parsed; a `Path(__file__)...parents[k]` (or `.parent`
chain) must stay inside the repository root, and no string literal may hold a `..` path component.
Shell scripts there are searched for `../` too. (CI also runs the suite from a clone in an empty
folder, so a path that slips past this check still fails there rather than on a user's machine.)"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "bench")


def file_anchored(node: ast.AST) -> bool:
    """Whether `node` is built on `__file__` (Path(__file__), Path(__file__).resolve(), ...)."""
    return any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(node))


def parent_depth(node: ast.AST) -> int | None:
    """How many directories above the file `node` points: `.parents[k]` is k + 1, each `.parent` one more."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
        if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
            inner = parent_depth(node.value.value) or 0
            return inner + node.slice.value + 1
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        return (parent_depth(node.value) or 0) + 1
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "resolve":
        return parent_depth(node.func.value)
    return None


def escapes(source: str, where: str) -> list[str]:
    """What the Python `source` of the file at `where` (relative to the root) reaches outside the
    repository, as 'line: reason' strings."""
    tree = ast.parse(source, filename=where)
    levels_to_root = len(Path(where).parts)  # parents[levels_to_root - 1] of the file is the root
    # Parametrised values are inputs handed to the code under test (a hostile shard name '../x'), not reads.
    inputs = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for d in f.decorator_list for n in ast.walk(d)}
    found = set()
    for node in ast.walk(tree):
        depth = parent_depth(node)
        if depth is not None and file_anchored(node) and depth > levels_to_root:
            found.add((node.lineno, f"{depth} directories above the file leaves the repository"))
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inputs
                and re.search(r"(^|/)\.\.(/|$)", node.value)):
            found.add((node.lineno, f"path with '..': {node.value!r}"))
    return [f"{line}: {reason}" for line, reason in sorted(found)]


def test_tests_and_benchmarks_read_only_inside_the_repository():
    problems = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue  # this file's examples of what is refused
            where = path.relative_to(REPO).as_posix()
            problems += [f"{where}:{p}" for p in escapes(path.read_text(encoding="utf-8"), where)]
        for path in sorted((REPO / folder).rglob("*.sh")):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "../" in line and not line.lstrip().startswith("#"):
                    problems.append(f"{path.relative_to(REPO)}:{i}: path with '../'")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_path_that_leaves_the_repository():
    source = ('from pathlib import Path\n'
              'A = Path(__file__).resolve().parents[4] / "shared"\n'  # tests/distill/cache/x.py: 5 up
              'B = Path(__file__).resolve().parents[3] / "tests"\n'  # the root itself
              'C = Path(__file__).parent.parent.parent.parent.parent\n'
              'D = "../shared/data/x.npz"\n'
              'E = Path(__file__).parent.parent.parent.parent\n')
    found = escapes(source, "tests/distill/cache/x.py")
    assert [f.split(":")[0] for f in found] == ["2", "4", "5"], found
