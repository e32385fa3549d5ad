"""One metrics code path for the project: `nnunet-mm evaluate` and its Python API."""
