"""A griffe extension for the API pages: a name re-exported as `from ._x import X as
X` is public, which is how the package `__init__.py` files declare their API."""

import ast

import griffe


class RedundantAliasesArePublic(griffe.Extension):
    def on_alias_instance(self, *, node, alias, **kwargs) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in node.names:
                if name.name == alias.name == name.asname:
                    alias.public = True
