#!/bin/bash
# MKD against target-only nnU-Net on the phantom pair, same tiny plans, same schedule (20 epochs x 25
# iterations), fold 0, 10 held-out target cases. Usage: benchmarks/mkd/run_phantom_pair.sh WORKDIR [TRAINER...]
# Target: Dataset941 (CT-like contrast, 6 training cases); assistant: Dataset942 (MR-like, 24 cases), the same
# kind of anatomy, unpaired. Prints Dice per label (1 organ, 2 lesion, 3 cyst) for each trainer.
set -eu
R=$(realpath -m "$1"); shift
HERE=$(dirname "$(realpath "$0")")
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
for T in "${@:-nnUNetTrainerMMPlain_20x25it_NoMirroring nnUNetTrainerMKD_20x25it_NoMirroring MKDPair_T2 MKDPair_noKD MKDPair_T2kd01 MKDPair_T1kd01}"; do
  for t in $T; do
    nnUNetv2_train 941 2d 0 -tr $t -p $PL -device cpu > "$R/train_$t.log" 2>&1
    nnUNetv2_predict -i "$TARGET/imagesTs" -o "$R/pred_$t" -d 941 -c 2d -f 0 -tr $t -p $PL -device cpu -npp 1 -nps 1 \
      --disable_progress_bar > /dev/null 2>&1
    echo "$t: $(nnunet-mm evaluate -ref "$TARGET/labelsTs" -pred "$R/pred_$t" -djfile "$TARGET/dataset.json" 2>/dev/null \
      | grep Dice | tr '\n' ' ')"
  done
done
