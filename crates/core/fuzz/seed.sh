#!/usr/bin/env bash
# Seeds corpus/<target>/ for the three fuzz targets from the repository's fixtures/*.json.
# The corpus is gitignored; run this once before the first `cargo fuzz run`. Uses jq when present
# to pull the encrypted body, its `encrypt` value and the plaintext out of encrypted_event.json.
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../../../fixtures
mkdir -p corpus/envelope corpus/decrypt corpus/money

for f in "$fixtures"/*.json; do
    cp "$f" "corpus/envelope/$(basename "$f")"
done

if command -v jq >/dev/null; then
    enc="$fixtures/encrypted_event.json"
    jq -j .body "$enc" >corpus/envelope/encrypted_body.json
    jq -j .plaintext "$enc" >corpus/envelope/plaintext.json
    jq -j .plaintext "$enc" >corpus/decrypt/plaintext.json
    jq -j '.body | fromjson | .encrypt' "$enc" >corpus/decrypt/encrypt.b64
    jq -j '[.. | .amount? | numbers | tostring] | .[]' "$fixtures"/assets_update_v1.json \
        >corpus/money/fixture_amount
else
    echo "jq not found: seeding envelope from the fixture files only" >&2
fi

i=0
for amount in 0 100 100.5 100.25 0.10 1.500 007.07 92233720368547758.07; do
    printf '%s' "$amount" >"corpus/money/amount_$i"
    i=$((i + 1))
done
echo "seeded: $(ls corpus/envelope | wc -l) envelope, $(ls corpus/decrypt | wc -l) decrypt, $(ls corpus/money | wc -l) money"
