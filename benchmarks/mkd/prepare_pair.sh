#!/bin/bash
# The phantom pair of the MKD benchmarks, written once into WORKDIR (synthetic data): a target with CT-like
# contrast (6 training and 10 held-out cases) and an unpaired assistant with MR-like contrast (24 cases, the same
# kind of anatomy), tiny plans and the MKD plans. PAIR_DIM=2d (default): 96 x 96 images, Dataset941/942, tiny 2d
# plans (batch 4: 2 target + 2 assistant patches). PAIR_DIM=3d: 48 x 64 x 64 volumes, Dataset943/944, tiny
# 3d_fullres plans, which keep nnU-Net's default 3d_fullres batch of 2 (1 target + 1 assistant patch).
# Source it: sets nnUNet_* (results in $R/res), nnUNet_extTrainer (with this folder's trainers), P (target plans),
# PL (MKD plans), TARGET (the target's raw folder), TID (the target's id), CONF (the configuration).
# Usage: [PAIR_DIM=3d] . benchmarks/mkd/prepare_pair.sh WORKDIR
R=$(realpath -m "$1")
HERE=$(dirname "$(realpath "${BASH_SOURCE[0]}")")
export nnUNet_raw=$R/raw nnUNet_preprocessed=$R/pre nnUNet_results=$R/res nnUNet_compile=f
export nnUNet_extTrainer="$(python -c 'from nnunet_multimodal.environment import ext_trainer_value; print(ext_trainer_value())'):$HERE"
case ${PAIR_DIM:-2d} in
  2d) TID=941; AID=942; SUFFIX=""; SHAPE="(96, 96)"; CONF=2d;;
  3d) TID=943; AID=944; SUFFIX=3D; SHAPE="(48, 64, 64)"; CONF=3d_fullres;;
  *) echo "PAIR_DIM must be 2d or 3d, got ${PAIR_DIM}" >&2; return 2;;
esac
P=nnUNetPlans_mmtiny; PL=${P}_mkd_Dataset${AID}_MRAssistant$SUFFIX; TARGET=$R/raw/Dataset${TID}_CTTarget$SUFFIX
if [ ! -d "$TARGET" ]; then
  mkdir -p "$R"
  python -c "
from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
write_dataset('$R/raw', $TID, 'CTTarget$SUFFIX', PhantomSpec(shape=$SHAPE, modalities=('CTlike',), seed=11), num_training=6, num_test=10)
write_dataset('$R/raw', $AID, 'MRAssistant$SUFFIX', PhantomSpec(shape=$SHAPE, modalities=('MRlike',), seed=12), num_training=24)"
  nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d $TID -c $CONF -np 1 -npfp 1 > "$R/prep.log" 2>&1
  nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d $AID -c $CONF -np 1 -npfp 1 --no_pp >> "$R/prep.log" 2>&1
  nnunet-mm plans -d $TID -c $CONF --tiny -o $P >> "$R/prep.log"
  nnunet-mm mkd-prepare -d $TID -a $AID -p $P -c $CONF >> "$R/prep.log"
fi
export nnUNet_n_proc_DA=0
