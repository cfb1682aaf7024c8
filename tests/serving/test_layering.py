"""components/ is the ground floor: the exported model's code must not depend on the server built on top of it.

Read from the source (every import statement, at any depth, including function-local ones), so it is quick
and needs no TensorFlow.
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPPER_FLOOR = "serving"


def _imported_modules(path):
    tree = ast.parse(open(path).read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _components_modules():
    for directory, _, files in os.walk(os.path.join(REPO, "components")):
        yield from (os.path.join(directory, name) for name in files if name.endswith(".py"))


def test_no_components_module_imports_serving():
    modules = list(_components_modules())
    assert len(modules) > 10  # the walk found the package
    offenders = sorted(f"{os.path.relpath(path, REPO)} imports {name}" for path in modules
                       for name in _imported_modules(path) if name.split(".")[0] == UPPER_FLOOR)
    assert not offenders, "components/ must not import serving/: " + "; ".join(offenders)


def test_the_check_sees_a_function_local_import(tmp_path):
    """The walk reaches imports inside functions, where the old `from serving import limits` could hide."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from serving import limits\n    import serving.rest\n")
    assert list(_imported_modules(str(source))) == ["serving", "serving.rest"]
