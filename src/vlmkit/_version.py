"""vlmkit's version, in one place: ``pyproject.toml`` reads it from here (hatchling's ``[tool.hatch.version]``),
and anything in vlmkit may import it, being below every other module."""

__version__ = "0.1.0"
