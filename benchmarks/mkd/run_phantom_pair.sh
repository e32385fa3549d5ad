#!/bin/bash
# MKD against target-only nnU-Net on the phantom pair (benchmarks/mkd/prepare_pair.sh), same tiny plans, same
# schedule (20 epochs x 25 iterations), fold 0, 10 held-out target cases. Usage:
# benchmarks/mkd/run_phantom_pair.sh WORKDIR [TRAINER...]. Prints Dice per label (1 organ, 2 lesion, 3 cyst).
set -eu
. "$(dirname "$(realpath "$0")")/prepare_pair.sh" "$1"; shift
for T in "${@:-nnUNetTrainerMMPlain_20x25it_NoMirroring MKDPair_T1 MKDPair_T2 MKDPair_noKD MKDPair_T2kd01 MKDPair_T1kd01}"; do
  for t in $T; do
    nnUNetv2_train 941 2d 0 -tr $t -p $PL -device cpu > "$R/train_$t.log" 2>&1
    nnUNetv2_predict -i "$TARGET/imagesTs" -o "$R/pred_$t" -d 941 -c 2d -f 0 -tr $t -p $PL -device cpu -npp 1 -nps 1 \
      --disable_progress_bar > /dev/null 2>&1
    echo "$t: $(nnunet-mm evaluate -ref "$TARGET/labelsTs" -pred "$R/pred_$t" -djfile "$TARGET/dataset.json" 2>/dev/null \
      | grep Dice | tr '\n' ' ')"
  done
done
