"""Converters from challenge layouts to nnU-Net raw datasets (`nnunet-mm convert`)."""
