#!/usr/bin/env bash
# seed-fair's cost, measured on slices side by side in one command (README, "seed-fair").
#   bash benchmarks/seed_fair_slice.sh OUT [ACTIVATIONS]   e.g. OUT=/tmp/fair '"relu", "selu", "sigmoid"'
# (1) the trial batch: one activation, the mlp, every size, at batch 1, 4 and 12 (the random
#     sampler asks the same trials whatever the batch: only the time may differ);
# (2) the slice: the preset with ACTIVATIONS only, run and reported, with the load average.
# The README's slice was run with run/search.py confirming each cell on
# StudySpec.confirm_seeds_of (TinyVGG on its grid's 10 seeds); before that, it confirms on 30.
# Each part runs after the other on a shared machine: read the load average beside each time.
set -euo pipefail
out=${1:?output folder}; acts=${2:-'"relu", "selu", "sigmoid"'}
preset=$(dirname "$0")/../src/actconv/study/presets/seed-fair.toml
mkdir -p "$out"
sed -e 's/"relu_family", "modern_family", "sigmoid_tanh_family"/"relu"/' "$preset" \
  | awk '/models = \["tinyvgg16"\]/{exit} {print}' | sed '$d' \
  | sed 's/models = \["mlp_original", "mlp"\]/models = ["mlp"]/' > "$out/one.toml"
for b in 1 4 12; do
  echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "batch=$b wall=%e s" actconv run "$out/one.toml" --trial-batch $b --jobs auto \
    --quiet --out "$out/batch$b"
done
sed -e "s/\"relu_family\", \"modern_family\", \"sigmoid_tanh_family\"/$acts/" "$preset" > "$out/slice.toml"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "slice run wall=%e s" actconv run "$out/slice.toml" --jobs auto --quiet --out "$out/slice"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "slice report wall=%e s cpu=%U s peak=%M kB" actconv report "$out/slice"
sqlite3 "$out/slice/actconv.sqlite" \
  "SELECT model_kind, count(*), round(sum(wall_s)) AS worker_s FROM runs GROUP BY 1" 2>/dev/null || true
