#!/bin/bash
# The GPU speed figures of docs/benchmarks.md: phantoms -> nnU-Net default plans -> nnunet-mm benchmark speed
# (eager, then nnUNet_compile=t) -> JSON and tables in OUTDIR. Usage, from the repository root with
# nnunet-multimodal installed:  benchmarks/gpu/run_speed.sh cuda OUTDIR big   (small: a CPU dry run)
# BUDGET (seconds, default 520) bounds the whole run; the compiled measurement gets what is left.
set -u
DEV=$1; O=$2; SIZE=$3
export PYTHONUNBUFFERED=1
W=/tmp/nnw; rm -rf $W; mkdir -p $W
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/pre nnUNet_results=$W/res
STEPS="--steps 20 --warmup 5 --cases 2"; [ $SIZE = small ] && STEPS="--steps 1 --warmup 1 --cases 1"
NP=8; [ $SIZE = small ] && NP=1
export nnUNet_n_proc_DA=$NP
t0=$(date +%s); el() { echo "== $(( $(date +%s) - t0 ))s: $*"; }
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch,sys,nnunetv2,timm;print(sys.version, 'torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"; nproc; } > $O/env.txt 2>&1
el data; python3 benchmarks/gpu/phantoms.py $SIZE || exit 1
el plan; nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np $NP > $O/prep.log 2>&1 || { tail -30 $O/prep.log; exit 1; }
nnUNetv2_plan_and_preprocess -d 503 -c 2d -np $NP >> $O/prep.log 2>&1 || { tail -30 $O/prep.log; exit 1; }
nnUNetv2_plan_and_preprocess -d 502 -c 3d_fullres --no_pp >> $O/prep.log 2>&1 || { tail -30 $O/prep.log; exit 1; }
nnunet-mm mkd-prepare -d 501 -a 502 -c 3d_fullres -np $NP >> $O/prep.log 2>&1 || { tail -30 $O/prep.log; exit 1; }
python3 -c "import json;p=json.load(open('$W/pre/Dataset501_GPUPhantom3D/nnUNetPlans.json'))['configurations']['3d_fullres'];print('3d',p['patch_size'],p['batch_size'],p['architecture']['arch_kwargs']['features_per_stage']);p=json.load(open('$W/pre/Dataset503_GPUPhantom2D/nnUNetPlans.json'))['configurations']['2d'];print('2d',p['patch_size'],p['batch_size'])" | tee -a $O/env.txt
bench() { name=$1; limit=$2; shift 2; el $name; timeout $limit nnunet-mm benchmark speed -device $DEV --rounds 1 $STEPS --json $O/$name.json "$@" 2>>$O/bench.log | tee -a $O/tables.txt; }
export nnUNet_compile=f
bench eager3d 200 -d 501 -c 3d_fullres -tr nnUNetTrainerCMSAD nnUNetTrainerMAML nnUNetTrainerModalityDropout
bench sam2d 120 -d 503 -c 2d -tr nnUNetTrainerSAMAdapter_randomInit
bench mkd3d 120 -d 501 -c 3d_fullres -p nnUNetPlans_mkd_Dataset502_GPUPhantom3DAssistant -tr nnUNetTrainerMKD
export nnUNet_compile=t
bench compile3d $(( ${BUDGET:-520} - $(date +%s) + t0 )) -d 501 -c 3d_fullres -tr nnUNetTrainerCMSAD nnUNetTrainerMAML
el done
