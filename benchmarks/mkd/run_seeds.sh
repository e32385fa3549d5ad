#!/bin/bash
# The MKD comparison over seeds on the phantom pair (synthetic; benchmarks/mkd/prepare_pair.sh): target-only
# nnU-Net at the plans' batch and at MKD's target share of it (equal target patches), MKD with last-sample
# foreground oversampling (before 2026-12-03), MKD as now, MKD with segmentation feedback into the alignment
# module; each MKD model also predicted with the probability ensemble (mkd.ensemble=softmax_probabilities) and
# with each segmentor alone (mkd.ensemble=target_segmentor, assistant_segmentor). Ablations (TRAINERS=...):
# Pair_MKDnoKD, Pair_MKDnoIAM, Pair_MKDkd01, Pair_MKDnoIAMkd01 (benchmarks/mkd/phantom_pair_trainers.py; the
# settings without kd01 distil at weight 1, as measured before 2026-12-04); the control
# Pair_targetOnlyHalfBatchProbabilisticOversampling (target-only with MKD's per-sample foreground draw).
# Fold 0, 20 x 25 iterations, 10 held-out target cases; trained models are reused. PAIR_DIM=3d: the 3D pair
# (benchmarks/mkd/prepare_pair.sh); TRAINERS="..." runs only those settings.
# Usage: [PAIR_DIM=3d] [TRAINERS=...] benchmarks/mkd/run_seeds.sh WORKDIR SEED [SEED...];
# then benchmarks/mkd/summarize_seeds.py WORKDIR
set -eu
HERE=$(dirname "$(realpath "$0")")
. "$HERE/prepare_pair.sh" "$1"; shift
TRAINERS=${TRAINERS:-"Pair_targetOnly Pair_targetOnlyHalfBatch Pair_MKDLastSampleOversampling Pair_MKD Pair_MKDiamFeedback"}
predict_and_evaluate() {  # RESULTS_ROOT TRAINER OUT
  nnUNet_results=$1 nnUNetv2_predict -i "$TARGET/imagesTs" -o "$3/pred" -d $TID -c $CONF -f 0 -tr $2 -p $PL -device cpu \
    -npp 1 -nps 1 --disable_progress_bar > "$3.predict.log" 2>&1
  nnunet-mm evaluate -ref "$TARGET/labelsTs" -pred "$3/pred" -djfile "$TARGET/dataset.json" -o "$3" > /dev/null
}
for s in "$@"; do
  for t in $TRAINERS; do
    out=$R/seed$s/$t; mkdir -p "$out"
    model=$R/res_seed$s/$(basename "$TARGET")/${t}__${PL}__$CONF
    [ -f "$model/fold_0/checkpoint_final.pth" ] || MKD_PAIR_SEED=$s nnUNet_results=$R/res_seed$s \
      nnUNetv2_train $TID $CONF 0 -tr $t -p $PL -device cpu > "$out.train.log" 2>&1
    predict_and_evaluate "$R/res_seed$s" $t "$out"
    case $t in Pair_MKD*)
      for variant in probabilityEnsemble:softmax_probabilities targetSegmentor:target_segmentor \
                     assistantSegmentor:assistant_segmentor; do
        name=${variant%%:*}; ensemble=${variant#*:}
        copy=$R/res_seed${s}_$name/$(basename "$TARGET")/${t}__${PL}__$CONF
        mkdir -p "$(dirname "$copy")"; rm -rf "$copy"; cp -r "$model" "$copy"
        python - "$copy/plans.json" $CONF $ensemble <<'PY'
import json, sys
plans = json.load(open(sys.argv[1]))
plans["configurations"][sys.argv[2]].setdefault("multimodal", {}).setdefault("mkd", {})["ensemble"] = sys.argv[3]
json.dump(plans, open(sys.argv[1], "w"), indent=2)
PY
        mkdir -p "$out+$name"
        predict_and_evaluate "$R/res_seed${s}_$name" $t "$out+$name"
      done;;
    esac
    echo "seed $s $t done"
  done
done
