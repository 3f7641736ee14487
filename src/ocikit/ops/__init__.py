"""Whole operations over images: each module is imported by its full name (``ocikit.ops.copy``)
and nothing is imported here, so a command loads only the operation it runs. The public names
are ``ocikit.NAME`` (``ocikit/__init__.py``)."""
