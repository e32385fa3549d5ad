#!/bin/bash
# Train and evaluate one MKD trainer of an earlier commit on the phantom pair (benchmarks/mkd/prepare_pair.sh),
# seeded as the Pair_* settings are, to tell a regression from the scatter between seeds. The commit's tree runs
# under `python -S` with the venv's site-packages on PYTHONPATH: the editable install of the current tree would
# otherwise be imported instead of it. Evaluation uses the current `nnunet-mm evaluate`.
# Usage: benchmarks/mkd/run_at_commit.sh COMMIT TRAINER PAIR_WORKDIR OUT SEED
#   e.g. benchmarks/mkd/run_at_commit.sh e15a298 nnUNetTrainerMKD_demo /tmp/pair /tmp/at_e15a298 0
set -eu
COMMIT=$1 TRAINER=$2 OUT=$(realpath -m "$4") SEED=$5
HERE=$(dirname "$(realpath "$0")")
. "$HERE/prepare_pair.sh" "$3"
SITE=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$OUT/tree" "$OUT/seeded"
git -C "$(git -C "$HERE" rev-parse --show-toplevel)" archive "$COMMIT" | tar -x -C "$OUT/tree"
cat > "$OUT/seeded/seeded_at_commit.py" <<PY
import os, random
import numpy as np
import torch
from nnunet_multimodal.training.mkd import $TRAINER


class Seeded_$TRAINER($TRAINER):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        seed = int(os.environ["MKD_PAIR_SEED"])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        super().__init__(plans, configuration, fold, dataset_json, device)
PY
cd "$OUT"  # not the repository: Python puts the working folder first on its path
export PYTHONPATH=$OUT/tree:$OUT/seeded:$SITE nnUNet_results=$OUT/res nnUNet_extTrainer=$OUT/tree/trainers:$OUT/seeded
export MKD_PAIR_SEED=$SEED
python -S -c "import nnunet_multimodal, sys; assert nnunet_multimodal.__file__.startswith('$OUT/tree'), nnunet_multimodal.__file__"
python -S -c "import sys; from nnunetv2.run.run_training import run_training_entry as main; sys.argv[0] = 'nnUNetv2_train'; main()" \
  $TID $CONF 0 -tr Seeded_$TRAINER -p $PL -device cpu > "$OUT/train.log" 2>&1
python -S -c "import sys; from nnunetv2.inference.predict_from_raw_data import predict_entry_point as main; sys.argv[0] = 'nnUNetv2_predict'; main()" \
  -i "$TARGET/imagesTs" -o "$OUT/pred" -d $TID -c $CONF -f 0 -tr Seeded_$TRAINER -p $PL -device cpu -npp 1 -nps 1 \
  --disable_progress_bar > "$OUT/predict.log" 2>&1
unset PYTHONPATH
nnunet-mm evaluate -ref "$TARGET/labelsTs" -pred "$OUT/pred" -djfile "$TARGET/dataset.json" -o "$OUT/eval" | grep Dice
