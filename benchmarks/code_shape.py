"""The shape of the source: code lines, argument-check lines, long functions and wide public signatures.

What a reader meets when they open the package and the recipes, measured the same way before and after a redesign:

* **code lines**: lines that hold a Python token other than a comment, after removing every docstring (module,
  class and function) and blank line;
* **check statements**: code lines of argument checks where they are made: a ``raise`` statement, an ``if`` whose
  body only raises or warns (its test counts), a call of ``warn`` or of a function named ``check_*`` / ``_check*``
  (as a statement, an assignment or a return);
* **check lines**: the check statements and, in addition, the whole body of every function named ``check_*`` /
  ``_check*`` (the stricter count: a check vocabulary such as ``validation.py`` counts in full);
* **long functions**: functions (methods included) with more than ``--max-lines`` code lines (60);
* **wide signatures**: public functions and methods (no leading underscore) with more than ``--max-parameters``
  parameters (13; ``self``/``cls`` not counted, ``*args``/``**kwargs`` counted once each);
* **autograd Functions**: classes deriving from ``torch.autograd.Function`` and the files they are in.

From the repository root, for the package and the recipes (the default paths)::

    python benchmarks/code_shape.py
    python benchmarks/code_shape.py --output docs/results/code_shape.json

Pass a folder of another checkout (``--root ../old-checkout``) to measure it the same way.
"""
from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import command_line, utc_now, write_results  # noqa: E402

DEFAULT_PATHS = ("ignite_igan", "recipes")


def _docstring_lines(tree: ast.AST) -> Set[int]:
    lines: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str, tree: ast.AST) -> Set[int]:
    """Line numbers that hold code: a token other than a comment, outside docstrings."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
            tokenize.ENDMARKER}
    lines: Set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines - _docstring_lines(tree)


def _called_name(node: ast.AST) -> str:
    if not isinstance(node, ast.Call):
        return ""
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _is_check_call(node: ast.AST) -> bool:
    name = _called_name(node)
    return name == "warn" or name.startswith(("check_", "_check"))


def _is_check_statement(node: ast.AST) -> bool:
    if isinstance(node, ast.Raise):
        return True
    value = getattr(node, "value", None)
    return isinstance(node, (ast.Expr, ast.Assign, ast.AnnAssign, ast.Return)) and _is_check_call(value)


def check_lines(tree: ast.AST, code: Set[int], bodies: bool = True) -> Set[int]:
    """Code lines of argument checks (see the module's docstring); ``bodies=False``: the check statements only."""
    lines: Set[int] = set()

    def span(node: ast.AST) -> Set[int]:
        return {line for line in range(node.lineno, node.end_lineno + 1) if line in code}

    for node in ast.walk(tree):
        if _is_check_statement(node):
            lines |= span(node)
        elif isinstance(node, ast.If) and all(
            isinstance(b, ast.Raise) or (isinstance(b, ast.Expr) and _is_check_call(b.value)) for b in node.body
        ):
            lines |= span(node.test) | {node.lineno}
        elif bodies and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
            ("check_", "_check")
        ):
            lines |= span(node)
    return lines


def _parameters(node: ast.AST) -> int:
    args = node.args
    count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
    count += (args.vararg is not None) + (args.kwarg is not None)
    positional = args.posonlyargs + args.args
    if positional and positional[0].arg in ("self", "cls"):
        count -= 1
    return count


def _is_autograd_function(node: ast.ClassDef) -> bool:
    return any(ast.unparse(base).endswith("autograd.Function") for base in node.bases)


def measure_file(path: Path, root: Path, max_lines: int, max_parameters: int) -> Dict[str, Any]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    code = code_lines(source, tree)
    long_functions: List[Dict[str, Any]] = []
    wide: List[Dict[str, Any]] = []
    functions: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = sum(1 for line in code if node.lineno <= line <= node.end_lineno)
            if lines > max_lines:
                long_functions.append({"name": node.name, "line": node.lineno, "code_lines": lines})
            parameters = _parameters(node)
            if parameters > max_parameters and not node.name.startswith("_"):
                wide.append({"name": node.name, "line": node.lineno, "parameters": parameters})
        elif isinstance(node, ast.ClassDef) and _is_autograd_function(node):
            functions.append(node.name)
    return {
        "file": path.relative_to(root).as_posix(),
        "code_lines": len(code),
        "check_lines": len(check_lines(tree, code)),
        "check_statements": len(check_lines(tree, code, bodies=False)),
        "long_functions": long_functions,
        "wide_signatures": wide,
        "autograd_functions": functions,
    }


def measure(root: Path, paths: Sequence[str], max_lines: int = 60, max_parameters: int = 13) -> Dict[str, Any]:
    """Measures every ``.py`` file below ``paths`` (relative to ``root``)."""
    files = sorted(p for name in paths for p in (root / name).rglob("*.py"))
    per_file = [measure_file(p, root, max_lines, max_parameters) for p in files]
    code = sum(f["code_lines"] for f in per_file)
    checks = sum(f["check_lines"] for f in per_file)
    statements = sum(f["check_statements"] for f in per_file)
    return {
        "paths": list(paths),
        "code_lines": code,
        "check_lines": checks,
        "check_fraction": checks / code if code else 0.0,
        "check_statements": statements,
        "check_statement_fraction": statements / code if code else 0.0,
        "long_functions": [dict(f, file=r["file"]) for r in per_file for f in r["long_functions"]],
        "wide_signatures": [dict(f, file=r["file"]) for r in per_file for f in r["wide_signatures"]],
        "autograd_functions": {r["file"]: r["autograd_functions"] for r in per_file if r["autograd_functions"]},
        "files": per_file,
    }


def report_lines(result: Dict[str, Any]) -> List[str]:
    lines = [
        f"code lines {result['code_lines']:,}, check statements {result['check_statements']:,} "
        f"({100 * result['check_statement_fraction']:.1f} %), check lines {result['check_lines']:,} "
        f"({100 * result['check_fraction']:.1f} %) in {', '.join(result['paths'])}",
        "",
        "| file | code lines | check statements | check lines |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {f['file']} | {f['code_lines']} | {f['check_statements']} | {f['check_lines']} |"
              for f in result["files"]]
    lines.append("")
    for f in result["long_functions"]:
        lines.append(f"long function: {f['file']}:{f['line']} {f['name']} ({f['code_lines']} code lines)")
    for f in result["wide_signatures"]:
        lines.append(f"wide signature: {f['file']}:{f['line']} {f['name']} ({f['parameters']} parameters)")
    for name, classes in result["autograd_functions"].items():
        lines.append(f"autograd Function: {name}: {', '.join(classes)}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout to measure (default: this one)")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                        help="comma-separated folders below --root (default: %(default)s)")
    parser.add_argument("--max-lines", type=int, default=60, help="longest function allowed (default: 60)")
    parser.add_argument("--max-parameters", type=int, default=13,
                        help="widest public signature allowed (default: 13)")
    parser.add_argument("--output", type=Path, help="also write the JSON here, and the table as .md beside it")
    args = parser.parse_args(argv)
    result = measure(args.root.resolve(), args.paths.split(","), args.max_lines, args.max_parameters)
    lines = report_lines(result)
    print("\n".join(lines))
    result.update(command=command_line(__file__, argv), date=utc_now())
    write_results(result, args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
