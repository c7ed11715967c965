"""The fields that define `example`: the one list that `neuralde bench` and
`neuralde study` build their grids from, so that a new field joins both by
defining `example` in its own file."""

import inspect

from . import fields


def example_fields() -> dict[str, type[fields.AbstractField]]:
    """Every field of `neuralde.fields` that defines `AbstractField.example`, by
    name, in the order of the package."""
    default = fields.AbstractField.example.__func__
    return {
        name: cls
        for name, cls in vars(fields).items()
        if isinstance(cls, type)
        and issubclass(cls, fields.AbstractField)
        and cls.example.__func__ is not default
    }


def summary(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line: a field's line in
    the reports."""
    paragraph = inspect.getdoc(cls).split("\n\n")[0]
    return " ".join(paragraph.split()).rstrip(",:")
