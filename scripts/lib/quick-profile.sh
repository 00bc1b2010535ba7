# Sourced by bench/build.sh and scripts/arm64-check: sets QUICK_PROFILE to the cargo --config
# arguments of the cheaper release profile (no LTO, default codegen units, the aws-sdk-* crates
# at opt-level 1) when QUICK=1, to nothing otherwise. Figures from it are not the shipped
# binary's; say so beside them.
QUICK_PROFILE=()
if [ "${QUICK:-}" = 1 ]; then
  QUICK_PROFILE=(--config 'profile.release.lto=false' --config 'profile.release.codegen-units=16')
  for crate in $(grep -oE '^aws-sdk-[a-z0-9]+' Cargo.toml); do
    QUICK_PROFILE+=(--config "profile.release.package.$crate.opt-level=1")
  done
fi
