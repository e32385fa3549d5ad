"""Challenge submissions: ``nnunet-mm submission build`` and the runner it ships."""
