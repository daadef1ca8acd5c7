"""The package's layering, checked on the source (issue 9): the config stops at ``stages/``.

- No library module imports ``modelguard.stages``: only ``modelguard/stages/*`` and
  ``modelguard/run.py`` (the entry glue, with ``main.py``) may.
- Nothing outside ``stages/`` and ``run.py`` can receive a config: no ``omegaconf`` or
  ``hydra`` import, no parameter named ``cfg`` or annotated ``DictConfig``/``ListConfig``
  (plain dicts are fine: wandb gets the resolved config as one).
- One config group, one package: every ``_target_`` of a group's options lives in
  ``modelguard.<group>`` (or torch), and no module sits in a package of another group's name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelguard"
CONF = PACKAGE.parent / "conf"
GLUE = {"run.py"}  # besides modelguard/stages/


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def is_glue(path: Path) -> bool:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] == "stages" or str(rel) in GLUE


def imported(tree: ast.AST, path: Path) -> list[str]:
    """Every module name an import statement of ``path`` names (relative imports resolved)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = ("modelguard",) + path.relative_to(PACKAGE).parent.parts
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ((module,) if module else ()))
            names.append(module)
            names.extend(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def library_modules() -> list[Path]:
    return [p for p in modules() if not is_glue(p)]


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_never_imports_stages(path):
    tree = ast.parse(path.read_text())
    bad = [n for n in imported(tree, path) if n == "modelguard.stages" or n.startswith("modelguard.stages.")]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: library code takes plain arguments, the stages read cfg"


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_never_receives_a_config(path):
    tree = ast.parse(path.read_text())
    bad = [n for n in imported(tree, path) if n.split(".")[0] in ("omegaconf", "hydra")]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: only modelguard/stages and run.py see the config"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                assert arg.arg != "cfg" and "Config" not in annotation, (
                    f"{path.relative_to(PACKAGE)}:{node.lineno} takes {arg.arg}: {annotation or 'a config'}")


def test_the_checks_see_every_package():
    packages = {p.relative_to(PACKAGE).parts[0] for p in library_modules() if len(p.relative_to(PACKAGE).parts) > 1}
    assert {"api.py", "engine.py", "metrics.py"} <= {p.name for p in library_modules()}
    assert {"arch", "attack", "dataset", "defense", "policy", "quantize", "recover", "utils"} <= packages


def _targets(node, found):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                found.append(v)
            else:
                _targets(v, found)
    elif isinstance(node, list):
        for v in node:
            _targets(v, found)
    return found


@pytest.mark.parametrize("group", ["arch", "dataset", "defense", "quantize", "recover", "policy"])
def test_one_group_one_package(group):
    import yaml
    for option in sorted((CONF / group).glob("*.yaml")):
        top = yaml.safe_load(option.read_text()) or {}
        target = top.get("_target_")
        assert target is None or target.startswith(f"modelguard.{group}."), (option.name, target)
        assert (PACKAGE / group).is_dir()


def test_attack_options_target_the_attack_package():
    import yaml
    for option in sorted((CONF / "attack").glob("*.yaml")):
        node = (yaml.safe_load(option.read_text()) or {}).get("attack", {})
        if "_target_" in node:
            assert node["_target_"].startswith("modelguard.attack."), option.name
        source = node.get("table_source")
        if source:  # a nested node naming its class: the recovery table's source
            assert source["_target_"].startswith("modelguard.recover.sources."), option.name


SEEDED_HERE = ("stages", "policy", "attack", "recover/shadows.py", "recover/sources.py", "api.py", "engine.py",
               "metrics.py")


def test_pipeline_seeds_only_through_named_streams():
    """The stages and the attacker's code take every seed from a named stream of utils/seed.py
    (make_generator, seed_torch): no ad hoc torch.manual_seed(seed + k). Components that get a
    seed knob (dataset, random noise, ModelGuard-S, the recovery network) seed their own."""
    for path in modules():
        rel = str(path.relative_to(PACKAGE))
        if rel.startswith(SEEDED_HERE):
            assert "manual_seed(" not in path.read_text(), rel
