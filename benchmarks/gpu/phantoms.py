"""Phantom datasets for benchmarks/gpu/run_speed.sh: 3D target (4 MRI), its MKD assistant, 2D (4 MRI)."""
import os
import sys

from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset

small = sys.argv[1] == "small"
raw = os.environ["nnUNet_raw"]
shape3d, shape2d = ((32, 48, 48), (64, 64)) if small else ((64, 128, 128), (192, 192))
mri = ("T1", "T1ce", "T2", "FLAIR")
write_dataset(raw, 501, "GPUPhantom3D", PhantomSpec(shape=shape3d, modalities=mri, seed=0), num_training=10)
write_dataset(raw, 502, "GPUPhantom3DAssistant",
              PhantomSpec(shape=shape3d, modalities=("CTlike", "MRlike", "T2", "T1"), seed=0), num_training=10)
write_dataset(raw, 503, "GPUPhantom2D", PhantomSpec(shape=shape2d, modalities=mri, seed=0), num_training=10)
