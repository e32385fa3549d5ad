#!/bin/bash
# The phantom pair of the MKD benchmarks, written once into WORKDIR (synthetic data): target Dataset941 (CT-like
# contrast, 6 training and 10 held-out cases), unpaired assistant Dataset942 (MR-like, 24 cases, the same kind of
# anatomy), tiny 2D plans and the MKD plans. Source it: sets nnUNet_* (results in $R/res), nnUNet_extTrainer (with
# this folder's trainers), P (target plans), PL (MKD plans), TARGET (the target's raw folder).
# Usage: . benchmarks/mkd/prepare_pair.sh WORKDIR
R=$(realpath -m "$1")
HERE=$(dirname "$(realpath "${BASH_SOURCE[0]}")")
export nnUNet_raw=$R/raw nnUNet_preprocessed=$R/pre nnUNet_results=$R/res nnUNet_compile=f
export nnUNet_extTrainer="$(python -c 'from nnunet_multimodal.environment import ext_trainer_value; print(ext_trainer_value())'):$HERE"
P=nnUNetPlans_mmtiny; PL=${P}_mkd_Dataset942_MRAssistant; TARGET=$R/raw/Dataset941_CTTarget
if [ ! -d "$TARGET" ]; then
  mkdir -p "$R"
  python -c "
from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
write_dataset('$R/raw', 941, 'CTTarget', PhantomSpec(shape=(96, 96), modalities=('CTlike',), seed=11), num_training=6, num_test=10)
write_dataset('$R/raw', 942, 'MRAssistant', PhantomSpec(shape=(96, 96), modalities=('MRlike',), seed=12), num_training=24)"
  nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d 941 -c 2d -np 1 > "$R/prep.log" 2>&1
  nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d 942 -c 2d -np 1 --no_pp >> "$R/prep.log" 2>&1
  nnunet-mm plans -d 941 -c 2d --tiny -o $P >> "$R/prep.log"
  nnunet-mm mkd-prepare -d 941 -a 942 -p $P -c 2d >> "$R/prep.log"
fi
export nnUNet_n_proc_DA=0
