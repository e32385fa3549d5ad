#!/bin/bash
# The GPU speed figures of docs/benchmarks.md, in two parts that each fit one device call:
#   eager (about 6 min): wheels, phantoms, nnU-Net default plans; the floor (floor.py); every candidate execution of
#          the CMSAD and MAML networks (network_variants.py); `nnunet-mm benchmark speed` of nnUNetTrainer, CMSAD
#          and MAML with profiler tables of steps and tiles
#   more (about 7 min): nnUNet_compile=t for CMSAD and MAML, then MKD (its own plans), then the SAM adapter (2D) if
#          time is left
# Each part sets up what is missing (about a minute more when the machine was handed back between the calls).
# Usage, from the repository root:  benchmarks/gpu/run_speed.sh DEVICE OUTDIR SIZE PART
#   DEVICE cuda|cpu; SIZE big|small (small: tiny phantoms and steps); PART eager|more|all.
#   The CPU dry run: BUDGET=3000 benchmarks/gpu/run_speed.sh cpu OUT small all (about 25 minutes on 2 cores).
# Where nnU-Net is not installed (the lent GPU machine) the wheels of .whl/ (carry_wheels.sh) are installed first;
# check_carried.py checks them on the CPU, where they are not installed. OUTDIR gets tables.txt (every table, also
# on stdout), env.txt and results-PART.tar.gz (JSON, profiler tables, logs).
# BUDGET (seconds; default 360 for eager, 420 for more) bounds a part; the last measurement gets what is left.
set -u
DEV=$1; O=$2; SIZE=$3; PART=$4
export PYTHONUNBUFFERED=1
t0=$(date +%s); el() { echo "== $(( $(date +%s) - t0 ))s: $*"; }
BUDGET=${BUDGET:-$([ $PART = more ] && echo 420 || echo 360)}
left() { echo $(( BUDGET - $(date +%s) + t0 )); }
if ! python3 -c "import nnunetv2" 2>/dev/null && [ ! -f /tmp/site/.installed ]; then
  el wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.installed || exit 1
fi
[ -f /tmp/site/.installed ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
W=/tmp/nnw-$SIZE; R=$O/results-$PART; mkdir -p $R/profiles
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/pre nnUNet_results=$W/res
STEPS="--steps 20 --warmup 5 --cases 2"; [ $SIZE = small ] && STEPS="--steps 1 --warmup 1 --cases 1"
NP=8; [ $SIZE = small ] && NP=1
X=1; [ $SIZE = small ] && X=8    # the time limits are the GPU's; a CPU dry run is slower
export nnUNet_n_proc_DA=$NP
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch,sys,nnunetv2,timm;print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'timm', timm.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
  nproc; } > $O/env.txt 2>&1
cat $O/env.txt
if [ ! -f $W/.ready ]; then
  el data; rm -rf $W; mkdir -p $W
  python3 benchmarks/gpu/phantoms.py $SIZE || exit 1
  el plan
  { nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np $NP && nnUNetv2_plan_and_preprocess -d 503 -c 2d -np $NP \
    && nnUNetv2_plan_and_preprocess -d 502 -c 3d_fullres --no_pp \
    && nnunet-mm mkd-prepare -d 501 -a 502 -c 3d_fullres -np $NP; } > $R/prep.log 2>&1 || { tail -30 $R/prep.log; exit 1; }
  touch $W/.ready
fi
P3=$W/pre/Dataset501_GPUPhantom3D/nnUNetPlans.json
python3 -c "import json;p=json.load(open('$P3'))['configurations']['3d_fullres'];print('3d',p['patch_size'],p['batch_size'],p['architecture']['arch_kwargs']['features_per_stage'])" | tee -a $O/env.txt
table() { tee -a $O/tables.txt; }
bench() {  # NAME LIMIT_S ARGS...: one `benchmark speed` run with profiles, its table to tables.txt
  local name=$1 limit=$(( $2 > 10 ? $2 : 10 )); shift 2; el "$name (limit ${limit}s)"
  echo "## $name ($(date -u +%F), nnUNet_compile=$nnUNet_compile)" | table
  timeout $(( limit * X )) nnunet-mm benchmark speed -device $DEV --rounds 1 $STEPS --json $R/$name.json \
    --profile $R/profiles/$name "$@" 2>>$R/bench.log | table
}
export nnUNet_compile=f
if [ $PART = eager ] || [ $PART = all ]; then
  el floor; echo "## floor (meta-device count)" | table
  python3 benchmarks/gpu/floor.py $P3 3d_fullres --json $R/floor.json 2>>$R/floor.log | table
  el variants; echo "## network variants, eager ($DEV)" | table
  small=; [ $SIZE = small ] && small=--small
  timeout $(( 120 * X )) python3 benchmarks/gpu/network_variants.py $DEV $P3 3d_fullres $small --json $R/variants.json \
    2>>$R/variants.log | table
  # modality dropout runs the plain network (1.04x step on 2026-11-30): left out to fit the call
  bench eager3d $(left) -d 501 -c 3d_fullres -tr nnUNetTrainerCMSAD nnUNetTrainerMAML
fi
if [ $PART = more ] || [ $PART = all ]; then
  export nnUNet_compile=t
  bench compile3d 300 -d 501 -c 3d_fullres -tr nnUNetTrainerCMSAD nnUNetTrainerMAML
  export nnUNet_compile=f
  bench mkd3d 100 -d 501 -c 3d_fullres -p nnUNetPlans_mkd_Dataset502_GPUPhantom3DAssistant -tr nnUNetTrainerMKD
  if [ $(left) -ge 40 ] || [ $SIZE = small ]; then bench sam2d $(left) -d 503 -c 2d -tr nnUNetTrainerSAMAdapter_randomInit
  else echo "== sam2d skipped: $(left)s left"; fi
fi
el "packing $R"
tar -czf $R.tar.gz -C $O $(basename $R) && rm -rf $R
el done
