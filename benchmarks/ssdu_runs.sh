#!/usr/bin/env bash
# The self-supervised (SSDU) measurements of docs/self-supervised.md: tiny-2d and tiny-3d at 4x on irecon's
# synthetic data (96x96 k-space, 64x64 targets), trained on undersampled test-style files only, against
# zero-filled and against the same models trained supervised for the same steps.
# Usage: benchmarks/ssdu_runs.sh OUT_DIR [GROUP...]   (single-threaded; groups: data 2d 3d levers, all by default;
# levers: the i-RIM's official output head instead of the residual one)
set -euo pipefail
out=${1:?usage: ssdu_runs.sh OUT_DIR [RUN...]}
shift
groups=${*:-data 2d 3d levers}
export OMP_NUM_THREADS=1
size=(--slices 6 --kspace-size 96 96 --recon-size 64 64)
common=(--val "$out/data/val" --device cpu --threads 1 --accelerations 4 --center-fractions 0.08)
ssdu() { irecon train "$out/data/undersampled" --self-supervised "${common[@]}" "$@"; }
supervised() { irecon train "$out/data/full" "${common[@]}" --loss ssim "$@"; }
two_d=(--model tiny-2d --epochs 20)
three_d=(--model tiny-3d --slab 6 --epochs 30)
for group in $groups; do
  case $group in
    data)
      irecon synth "$out/data/undersampled" --split test --volumes 8 "${size[@]}" --acceleration 4 --center-fraction 0.08 --seed 1
      irecon synth "$out/data/full" --split train --volumes 8 "${size[@]}" --seed 1
      irecon synth "$out/data/val" --split val --volumes 2 "${size[@]}" --seed 2
      ;;
    2d)
      for seed in 0 1; do
        ssdu "${two_d[@]}" --seed "$seed" --out "$out/2d/ssdu-seed$seed" > "$out/2d-ssdu-seed$seed.log" 2>&1 &
        supervised "${two_d[@]}" --seed "$seed" --out "$out/2d/supervised-seed$seed" > "$out/2d-supervised-seed$seed.log" 2>&1
        wait
      done
      ;;
    3d)
      ssdu "${three_d[@]}" --seed 0 --out "$out/3d/ssdu-seed0" > "$out/3d-ssdu-seed0.log" 2>&1 &
      supervised "${three_d[@]}" --seed 0 --out "$out/3d/supervised-seed0" > "$out/3d-supervised-seed0.log" 2>&1
      wait
      ;;
    levers)
      ssdu "${two_d[@]}" --seed 0 --output-head official --out "$out/2d/ssdu-official-seed0" > "$out/2d-ssdu-official.log" 2>&1
      ;;
  esac
done
