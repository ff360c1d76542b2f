"""Importers: pure parsers from public catalogue exports into :mod:`knowledge.models` objects.

They read and validate; they never write to a database. Whoever stores the result decides how.
"""

from knowledge.importers.dldb import CatalogFormatError, DldbBatch, html_to_text, parse_dldb, parse_dldb_data

__all__ = ["CatalogFormatError", "DldbBatch", "html_to_text", "parse_dldb", "parse_dldb_data"]
