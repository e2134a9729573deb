#!/bin/bash
# eks-image-prefetcher node agent: the script of the SSM Command document (template.yaml).
# Edit this file, then run `make document` to copy it into template.yaml; a test fails if the
# two differ, and the node tests run the copy in template.yaml, byte for byte.
#
# Runs as root on every EKS node. Parameters arrive only as SSM_* environment variables
# (interpolationType ENV_VAR); they are validated again here and never become shell text.
# Result contract: one JSON line per image on stdout
#   {"image","digest","tag","outcome":"pulled|present|skipped-disk|failed","bytes","seconds","error"}
# and exit code 0 only if no image failed. Progress and diagnostics go to stderr.
[ -n "${BASH_VERSION:-}" ] || exec /bin/bash "$0" "$@"
set -uo pipefail
umask 077
export LC_ALL=C

readonly NAMESPACE=k8s.io
readonly MARK_LABEL=eks-image-prefetcher/pulled
readonly MAX_IMAGES=50
readonly MAX_ERROR=400
# Keep in step with prefetcher/refs.py (tests/unit/test_document.py checks it).
readonly REGISTRY_RE='[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?'
readonly REPOSITORY_RE='[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*'
readonly TAG_RE='[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}'
readonly DIGEST_RE='sha256:[a-f0-9]{64}'
readonly ITEM_RE="^${REGISTRY_RE}/${REPOSITORY_RE}(:${TAG_RE})?@${DIGEST_RE}\$"

log() { printf '%s prefetch: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
fail_input() { log "rejected: $*"; exit 2; }

# --- parameters ------------------------------------------------------------------------------

if [ -z "${SSM_Images+set}" ]; then
  fail_input "SSM_Images is not set: this SSM agent does not pass parameters as environment variables (needs 3.3.2746.0 or later)"
fi
images_param=$SSM_Images
min_free_mib=${SSM_MinFreeDiskMiB:-2048}
parallelism=${SSM_Parallelism:-3}
pull_timeout=${SSM_PullTimeoutSeconds:-1800}
cleanup=${SSM_CleanupSuperseded:-false}

[ "${#images_param}" -le 32000 ] || fail_input "Images is longer than 32000 characters"
[[ $min_free_mib =~ ^[0-9]{1,8}$ ]] || fail_input "MinFreeDiskMiB must be a whole number of MiB"
[[ $parallelism =~ ^([1-9]|1[0-6])$ ]] || fail_input "Parallelism must be 1 to 16"
[[ $pull_timeout =~ ^[1-9][0-9]{1,4}$ ]] || fail_input "PullTimeoutSeconds must be 10 to 99999"
[[ $cleanup =~ ^(true|false)$ ]] || fail_input "CleanupSuperseded must be true or false"
min_free_mib=$((10#$min_free_mib))
parallelism=$((10#$parallelism))
pull_timeout=$((10#$pull_timeout))

# Split on commas without letting the shell interpret anything, then check every item.
items=()
rest=$images_param
while :; do
  item=${rest%%,*}
  [[ $item =~ $ITEM_RE ]] || fail_input "Images item $(( ${#items[@]} + 1 )) is not registry/repository[:tag]@sha256:<digest>"
  items+=("$item")
  [ "${#items[@]}" -le "$MAX_IMAGES" ] || fail_input "more than ${MAX_IMAGES} images"
  [ "$item" != "$rest" ] || break
  rest=${rest#*,}
done

# --- containerd ------------------------------------------------------------------------------

# Bottlerocket runs the SSM agent in its control container: reach the host's containerd through
# the admin container. Elsewhere, ctr talks to containerd's socket (CONTAINERD_ADDRESS if set).
if command -v apiclient >/dev/null 2>&1; then
  ctr_cmd=(apiclient exec admin sheltie ctr)
  containerd_root=${PREFETCH_CONTAINERD_ROOT:-/var/lib/containerd}
elif command -v ctr >/dev/null 2>&1; then
  ctr_cmd=(ctr)
  containerd_root=${PREFETCH_CONTAINERD_ROOT:-/var/lib/containerd}
else
  log "neither ctr nor apiclient found: is this an EKS node with containerd?"
  exit 3
fi
ctr_ns() { "${ctr_cmd[@]}" --namespace "$NAMESPACE" "$@"; }

workdir=$(mktemp -d "${TMPDIR:-/tmp}/prefetch.XXXXXXXX") || { log "cannot create a private work directory"; exit 3; }
trap 'rm -rf -- "$workdir"' EXIT

# --- helpers ---------------------------------------------------------------------------------

json_string() {
  # Print $1 as a JSON string: escape backslash, quote and control characters.
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  s=$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')
  printf '"%s"' "$s"
}

now() { date +%s.%N; }

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

free_mib() { df -Pk -- "$containerd_root" 2>/dev/null | awk 'NR == 2 { printf "%d", $4 / 1024 }'; }

# The size of an image's content in containerd, in bytes (0 if unknown).
image_bytes() {
  ctr_ns images ls "name==$1" 2>/dev/null | awk 'NR == 2 {
      n = $4; u = $5; m = 1
      if (u == "KiB") m = 1024; else if (u == "MiB") m = 1048576; else if (u == "GiB") m = 1073741824
      printf "%d", n * m }'
}

# True if the image is in the namespace, complete, and unpacked for this node.
is_present() {
  ctr_ns images check "name==$1" 2>/dev/null | awk 'NR == 2 && $4 == "complete" && $NF == "true" { found = 1 } END { exit !found }'
}

registry_auth_dir() {
  # For ECR, a containerd hosts directory whose hosts.toml carries the Authorization header, so
  # the token is never on a command line. Empty output: pull anonymously.
  local registry=$1 region creds password
  [[ $registry =~ ^[0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$ ]] || return 0
  region=${BASH_REMATCH[1]}
  if [ -f "$workdir/auth.$registry" ]; then
    printf '%s' "$workdir/hosts"
    return 0
  fi
  if command -v aws >/dev/null 2>&1; then
    password=$(aws ecr get-login-password --region "$region" 2>"$workdir/auth.err") || password=''
  fi
  if [ -z "${password:-}" ]; then
    log "no ECR credentials for $registry: $(tail -n 1 "$workdir/auth.err" 2>/dev/null)"
    return 0
  fi
  creds=$(printf 'AWS:%s' "$password" | base64 -w0)
  mkdir -p "$workdir/hosts/$registry"
  {
    printf 'server = "https://%s"\n' "$registry"
    printf '[host."https://%s"]\n' "$registry"
    printf '  capabilities = ["pull", "resolve"]\n'
    printf '  [host."https://%s".header]\n' "$registry"
    printf '    Authorization = "Basic %s"\n' "$creds"
  } > "$workdir/hosts/$registry/hosts.toml"
  : > "$workdir/auth.$registry"
  printf '%s' "$workdir/hosts"
}

# --- one image -------------------------------------------------------------------------------

pull_one() {
  local item=$1 name digest registry rest repo tag pinned started outcome=pulled error='' bytes=0 free hosts
  name=${item%@*}
  digest=${item##*@}
  registry=${name%%/*}
  rest=${name#*/}
  if [[ $rest == *:* ]]; then tag=${rest##*:}; repo=${rest%:*}; else tag=''; repo=$rest; fi
  pinned="$registry/$repo@$digest"
  started=$(now)

  if is_present "$pinned"; then
    outcome=present
  else
    free=$(free_mib)
    if [ -n "$free" ] && [ "$free" -lt "$min_free_mib" ]; then
      outcome=skipped-disk
      error="only ${free} MiB free on ${containerd_root}, below MinFreeDiskMiB ${min_free_mib} (missing $((min_free_mib - free)) MiB)"
    else
      local args=(images pull --label "$MARK_LABEL=true")
      hosts=$(registry_auth_dir "$registry")
      [ -n "$hosts" ] && args+=(--hosts-dir "$hosts")
      [ -n "${PREFETCH_PLAIN_HTTP:-}" ] && args+=(--plain-http)
      log "pulling $pinned"
      if ! timeout --kill-after=10 "$pull_timeout" "${ctr_cmd[@]}" --namespace "$NAMESPACE" "${args[@]}" "$pinned" \
          >"$workdir/pull.$$.$BASHPID.log" 2>&1; then
        outcome=failed
        error=$(grep -v '^\s*$' "$workdir/pull.$$.$BASHPID.log" | tail -n 1 | cut -c1-"$MAX_ERROR")
        [ -n "$error" ] || error="ctr images pull failed or timed out after ${pull_timeout}s"
      fi
    fi
  fi

  if [ "$outcome" = pulled ] || [ "$outcome" = present ]; then
    if [ -n "$tag" ] && ! ctr_ns images tag --force "$pinned" "$registry/$repo:$tag" >/dev/null 2>"$workdir/tag.$BASHPID.err"; then
      outcome=failed
      error="pulled, but tagging $registry/$repo:$tag failed: $(tail -n 1 "$workdir/tag.$BASHPID.err" | cut -c1-"$MAX_ERROR")"
    fi
    bytes=$(image_bytes "$pinned")
  fi
  printf '{"image":%s,"digest":%s,"tag":%s,"outcome":"%s","bytes":%d,"seconds":%s,"error":%s}\n' \
    "$(json_string "$pinned")" "$(json_string "$digest")" "$(json_string "$tag")" "$outcome" \
    "${bytes:-0}" "$(elapsed "$started" "$(now)")" "$(json_string "$error")"
}

# --- all images, a bounded number at a time ---------------------------------------------------

log "${#items[@]} image(s), parallelism ${parallelism}, ${min_free_mib} MiB minimum free"
index=0
for item in "${items[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallelism" ]; do
    wait -n
  done
  pull_one "$item" >"$workdir/result.$index" &
  index=$((index + 1))
done
wait

status=0
for ((i = 0; i < index; i++)); do
  cat "$workdir/result.$i"
  grep -q '"outcome":"failed"' "$workdir/result.$i" && status=1
done
exit "$status"
