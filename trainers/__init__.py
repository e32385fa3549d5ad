"""Trainer shims that nnU-Net imports through nnUNet_extTrainer (see nnunet-mm env)."""
