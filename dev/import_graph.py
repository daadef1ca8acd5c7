"""Print the import graph of modelguard/ by package: `package -> packages it imports`.

Walks the source with ast (nothing is imported), so it runs on any checkout:
    python dev/import_graph.py [path/to/modelguard]
Top-level modules (api.py, engine.py, ...) count as packages of their own name.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path


def unit(module: str) -> str:
    """modelguard.defense.mad -> defense; modelguard.api -> api."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def graph(root: Path) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        src = unit(module)
        edges[src]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("modelguard.") and unit(name) != src:
                    edges[src].add(unit(".".join(name.split(".")[:2])))
    return edges


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "modelguard")
    for src, dsts in sorted(graph(root).items()):
        if src != "modelguard":
            print(f"{src} -> {', '.join(sorted(dsts)) or '(none)'}")


if __name__ == "__main__":
    main()
