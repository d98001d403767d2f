"""No module of the package imports itself back through another (issue: the engine <-> pipeline cycle).

The layer contracts in pyproject.toml (lint-imports) order the packages; this checks every module,
including imports inside functions, with grimp (import-linter's own import graph).
"""

import grimp


def test_no_module_is_part_of_an_import_cycle() -> None:
    graph = grimp.build_graph("img2img")
    cycles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(module)
        if imported != module and graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []
