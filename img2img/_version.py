"""The package version: a leaf, so modules that record it never import the package itself."""

__version__ = "0.1.0"
