#!/bin/bash
# eks-image-prefetcher node agent: the script of the SSM Command document (template.yaml).
# Edit this file, then run `make document` to copy it into template.yaml; a test fails if the
# two differ, and the node tests run the copy in template.yaml, byte for byte.
#
# Runs as root on every EKS node. Parameters arrive only as SSM_* environment variables
# (interpolationType ENV_VAR); they are validated again here and never become shell text.
#
# Result contract (prefetcher/commands.py bounds its size; the SSM agent keeps only the first
# 24,000 characters of stdout and 8,000 of stderr): on stdout, one JSON line per image, printed as
# soon as that image is done (a run stopped at the execution timeout keeps what it printed),
#   {"image","digest","tag","outcome":"pulled|present|skipped-disk|failed","bytes","seconds","error","pinned"}
# or, when nothing can be pulled at all, one line {"fatal":"<why>"}; errors are printable ASCII
# without quotes or backslashes, at most MAX_ERROR bytes. Exit code 0 only if no image failed.
# Mode=inventory pulls nothing: one line per image (the Images given, then every image this tool
# delivered), outcome "present" or "absent", then one line
#   {"disk":{"path","free_bytes","total_bytes","more"} }   (without the space: no double braces
# in this script, which SSM could take for a parameter)
# where more counts the images left out to stay within what the SSM agent keeps.
# Progress and diagnostics go to stderr, a few short lines per image.
#
# Settings of the node, not of the command (root sets them, SSM cannot):
#   CONTAINERD_ADDRESS        containerd's socket (ctr's own variable)
#   PREFETCH_CONTAINERD_ROOT  containerd's root directory (default /var/lib/containerd)
#   PREFETCH_HOSTS_DIR        registry host configuration, as containerd's CRI config_path
#                             (default /etc/containerd/certs.d)
#
# Bash, because this is the aws:runShellScript body on AL2, AL2023 and Bottlerocket: nothing to
# install on a node (docs/node-agent.md, "Why bash"). So: bash 4.2 (AL2) features only (`wait -n`
# behind a version check), no jq, no Python; settings, then the functions of each step in the
# order main runs them, then `main`.
[ -n "${BASH_VERSION:-}" ] || exec /bin/bash "$0" "$@"
set -uo pipefail
umask 077
export LC_ALL=C

readonly NAMESPACE=k8s.io
# Labels on containerd image records. MARK_LABEL: pulled by this agent (CleanupSuperseded only
# removes those). DELIVERED_LABEL: pulled or found present by this agent, with when (inventory
# reports every image that has it). PIN_LABEL: the CRI plugin's pin, which the kubelet's image GC
# skips (docs/node-agent.md: which versions honour it); OWN_PIN_LABEL beside it marks a pin this
# agent set, the only pins it ever removes.
readonly MARK_LABEL=eks-image-prefetcher/pulled
readonly DELIVERED_LABEL=eks-image-prefetcher/delivered
readonly PIN_LABEL=io.cri-containerd.pinned
readonly PIN_VALUE=pinned
readonly OWN_PIN_LABEL=eks-image-prefetcher/pinned
readonly MAX_IMAGES=50
readonly MAX_ERROR=300
readonly PULL_ATTEMPTS=3
# Room for unpacking: a layer's compressed blob stays in the content store and its unpacked
# snapshot takes (for typical images) about twice as much again.
readonly UNPACK_FACTOR=2
# Inventory: the result lines stop short of what the SSM agent keeps of stdout (24,000 characters,
# less its 20-character cut suffix), leaving room for the disk line (at most DISK_LINE_MAX).
readonly STDOUT_KEEP=23980
readonly DISK_LINE_MAX=$((100 + MAX_ERROR))
# Keep in step with prefetcher/refs.py (tests/unit/test_document.py checks it).
readonly REGISTRY_RE='[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?'
readonly REPOSITORY_RE='[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*'
readonly TAG_RE='[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}'
readonly DIGEST_RE='sha256:[a-f0-9]{64}'
readonly ITEM_RE="^${REGISTRY_RE}/${REPOSITORY_RE}(:${TAG_RE})?@${DIGEST_RE}\$"
# The node's settings (above), and where this run's work directory goes.
readonly containerd_root=${PREFETCH_CONTAINERD_ROOT:-/var/lib/containerd}
readonly base_hosts_dir=${PREFETCH_HOSTS_DIR:-/etc/containerd/certs.d}
# On Bottlerocket, where on the host the registry configuration for ctr goes (/run is a tmpfs).
readonly host_run=${PREFETCH_HOST_RUN_DIR:-/run/eks-image-prefetcher}
readonly tmp_base=${TMPDIR:-/tmp}

# The steps share the run's state in globals, each set once by the step that owns it:
#   read_parameters   items min_free_mib parallelism pull_timeout cleanup mode pin_images
#   reach_containerd  bottlerocket ctr_cmd node_arch
#   make_workdir      workdir host_workdir hosts_dir
#   pull_all          status (1 once an image failed)
# Bash 4.2 has no namerefs: a function that returns several values (parse_item, the steps of
# pull_one) sets them in its caller's scope, where the caller has declared them `local`.

# --- output ------------------------------------------------------------------------------------

log() { printf '%s prefetch: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# Text for a result line: printable ASCII, no quotes or backslashes (so JSON needs no escapes and
# the line's length is known in advance), at most MAX_ERROR bytes.
clean_text() { printf '%s' "$1" | tr -c '[:print:]' ' ' | tr "\"\\\\" "'/" | cut -c1-"$MAX_ERROR"; }

# Nothing can be pulled: say why on stdout (where the audit reads it) and on stderr, and stop.
fatal() {
  local code=$1 why
  why=$(clean_text "$2")
  log "$why"
  printf '{"fatal":"%s"}\n' "$why"
  exit "$code"
}
fail_input() { fatal 2 "rejected: $*"; }

# --- 1. parameters -----------------------------------------------------------------------------

read_parameters() {
  local images_param rest item registry repo tag digest
  if [ -z "${SSM_Images+set}" ]; then
    fail_input "SSM_Images is not set: this SSM agent does not pass parameters as environment variables (needs 3.3.2746.0 or later)"
  fi
  images_param=$SSM_Images
  min_free_mib=${SSM_MinFreeDiskMiB:-2048}
  parallelism=${SSM_Parallelism:-3}
  pull_timeout=${SSM_PullTimeoutSeconds:-1800}
  cleanup=${SSM_CleanupSuperseded:-false}
  # Unset: the default; set but empty: rejected.
  mode=${SSM_Mode-pull}
  pin_images=${SSM_PinImages-true}

  [ "${#images_param}" -le 32000 ] || fail_input "Images is longer than 32000 characters"
  [[ $min_free_mib =~ ^[0-9]{1,8}$ ]] || fail_input "MinFreeDiskMiB must be a whole number of MiB"
  [[ $parallelism =~ ^([1-9]|1[0-6])$ ]] || fail_input "Parallelism must be 1 to 16"
  [[ $pull_timeout =~ ^[1-9][0-9]{1,4}$ ]] || fail_input "PullTimeoutSeconds must be 10 to 99999"
  [[ $cleanup =~ ^(true|false)$ ]] || fail_input "CleanupSuperseded must be true or false"
  [[ $mode =~ ^(pull|inventory)$ ]] || fail_input "Mode must be pull or inventory"
  [[ $pin_images =~ ^(true|false)$ ]] || fail_input "PinImages must be true or false"
  min_free_mib=$((10#$min_free_mib))
  parallelism=$((10#$parallelism))
  pull_timeout=$((10#$pull_timeout))

  # Split on commas without letting the shell interpret anything, then check every item.
  items=()
  rest=$images_param
  while :; do
    item=${rest%%,*}
    [[ $item =~ $ITEM_RE ]] || fail_input "Images item $((${#items[@]} + 1)) is not registry/repository[:tag]@sha256:<digest>"
    parse_item "$item"
    if [ "${#registry}" -gt 255 ] || [ "${#repo}" -gt 256 ]; then
      fail_input "Images item $((${#items[@]} + 1)) has a registry or repository name that is too long"
    fi
    items+=("$item")
    [ "${#items[@]}" -le "$MAX_IMAGES" ] || fail_input "more than ${MAX_IMAGES} images"
    [ "$item" != "$rest" ] || break
    rest=${rest#*,}
  done
}

# The one reading of an Images item, registry/repository[:tag]@sha256:<digest> (ITEM_RE has
# matched it): sets registry, repo, tag ('' if none) and digest in the caller's scope. Neither the
# repository nor the tag can hold a ':' or '@'; a registry's ':port' comes before the first '/'.
parse_item() {
  local name=${1%@*} path
  digest=${1##*@}
  registry=${name%%/*}
  path=${name#*/}
  if [[ $path == *:* ]]; then
    tag=${path##*:}
    repo=${path%:*}
  else
    tag=''
    repo=$path
  fi
}

# --- 2. prepare: the way to containerd, the work directory -------------------------------------

prepare() {
  reach_containerd
  make_workdir
  if [ "$mode" = inventory ]; then
    log "inventory of ${#items[@]} current image(s) and every image this tool delivered, pins ${pin_images}, platform linux/${node_arch}"
  else
    log "${#items[@]} image(s), parallelism ${parallelism}, ${min_free_mib} MiB minimum free, pins ${pin_images}, platform linux/${node_arch}"
  fi
}

# Bottlerocket runs the SSM agent in its control container, which sees none of the host's files.
# Everything that touches the host (ctr, the disk check, the registry configuration ctr reads,
# the kubelet's credential provider) goes through the admin container: `apiclient exec admin
# sheltie CMD` runs CMD in the host's namespaces, with a clean environment, stdout and stderr
# merged, and no shell there (Bottlerocket has none): plain programs only. The admin container
# is disabled by default; without it nothing can be pulled, and the reason says so.
# Elsewhere the script runs on the host itself, and ctr talks to containerd's socket
# (CONTAINERD_ADDRESS if set).
reach_containerd() {
  local reply
  if command -v apiclient >/dev/null 2>&1; then
    bottlerocket=true
    if ! reply=$(apiclient exec admin sheltie true 2>&1); then
      fatal 3 "Bottlerocket: the host cannot be reached through the admin container ($(printf '%s' "$reply" | tail -n 1)): it is disabled by default; prefetching needs settings.host-containers.admin.enabled = true (docs/node-agent.md)"
    fi
  elif command -v ctr >/dev/null 2>&1; then
    bottlerocket=false
  else
    fatal 3 "neither ctr nor apiclient found: is this an EKS node with containerd?"
  fi
  ctr_cmd=(ctr)
  [ "$bottlerocket" = false ] || ctr_cmd=(apiclient exec admin sheltie ctr)
  case "$(uname -m)" in
    x86_64 | amd64) node_arch=amd64 ;;
    aarch64 | arm64) node_arch=arm64 ;;
    *) node_arch=$(uname -m) ;;
  esac
}

on_host() {
  if [ "$bottlerocket" = true ]; then
    apiclient exec admin sheltie "$@"
  else
    "$@"
  fi
}

ctr_ns() { "${ctr_cmd[@]}" --namespace "$NAMESPACE" "$@"; }

# The work directory holds the registry configuration with the ECR Authorization header (on
# Bottlerocket that configuration is on the host, in a directory of the same name under
# host_run). At the execution timeout the SSM agent SIGKILLs this script's whole process group,
# so no trap runs: a watcher in a session of its own (the kill does not reach it) removes both
# once this shell is gone, and each run first removes what runs that are gone left behind
# (should the watcher have been killed too). The directory's name carries its run's process id.
make_workdir() {
  remove_stale_workdirs
  workdir=$(mktemp -d "$tmp_base/prefetch.$$.XXXXXXXX") || fatal 3 "cannot create a private work directory in $tmp_base"
  host_workdir=$workdir
  [ "$bottlerocket" = false ] || host_workdir="$host_run/${workdir##*/}"
  # The private hosts directory ctr reads (prepare_hosts): here, or on Bottlerocket on the host.
  hosts_dir="$host_workdir/hosts"
  trap cleanup_workdirs EXIT
  start_cleanup_watcher
}

remove_stale_workdirs() {
  local stale owner
  for stale in "$tmp_base"/prefetch.*.*; do
    if [ ! -d "$stale" ] || [ -L "$stale" ] || [ ! -O "$stale" ]; then
      continue
    fi
    owner=${stale##*/prefetch.}
    owner=${owner%%.*}
    [[ $owner =~ ^[0-9]+$ ]] || continue
    if ! kill -0 "$owner" 2>/dev/null; then
      rm -rf -- "$stale"
      [ "$bottlerocket" = false ] || on_host rm -rf -- "$host_run/${stale##*/}" >/dev/null 2>&1
    fi
  done
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup_workdirs() {
  rm -rf -- "$workdir"
  [ "$bottlerocket" = false ] || on_host rm -rf -- "$host_workdir" >/dev/null 2>&1
}

start_cleanup_watcher() {
  if command -v setsid >/dev/null 2>&1; then
    # In a subshell that exits at once: the watcher is no job of this shell (wait ignores it).
    # shellcheck disable=SC2016 # the watcher's own positional parameters, not this shell's
    (setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
      rm -rf -- "$2"
      [ "$3" = "$2" ] || apiclient exec admin sheltie rm -rf -- "$3"' \
      prefetch-cleanup "$$" "$workdir" "$host_workdir" </dev/null >/dev/null 2>&1 &)
  fi
}

# --- helpers -----------------------------------------------------------------------------------

# Flatten JSON on stdin into "path<TAB>value" lines (manifests.0.digest, layers.1.size, ...).
# Exits non-zero on malformed input. POSIX awk: the nodes have no jq.
json_paths() {
  awk '
    function ws() { while (pos <= n && index(" \t\r\n", substr(s, pos, 1)) > 0) pos++ }
    function str(   out, c) {
      pos++; out = ""
      while (pos <= n) {
        c = substr(s, pos, 1)
        if (c == "\\") { out = out substr(s, pos, 2); pos += 2; continue }
        if (c == "\"") { pos++; return out }
        out = out c; pos++
      }
      bad = 1; return out
    }
    function value(path,   c, key, i, start) {
      if (bad) return
      ws(); c = substr(s, pos, 1)
      if (c == "{") {
        pos++; ws()
        if (substr(s, pos, 1) == "}") { pos++; return }
        while (!bad) {
          ws()
          if (substr(s, pos, 1) != "\"") { bad = 1; return }
          key = str(); ws()
          if (substr(s, pos, 1) != ":") { bad = 1; return }
          pos++
          value(path == "" ? key : path "." key)
          ws(); c = substr(s, pos, 1); pos++
          if (c == "}") return
          if (c != ",") { bad = 1; return }
        }
        return
      }
      if (c == "[") {
        pos++; ws()
        if (substr(s, pos, 1) == "]") { pos++; return }
        for (i = 0; !bad; i++) {
          value(path == "" ? i : path "." i)
          ws(); c = substr(s, pos, 1); pos++
          if (c == "]") return
          if (c != ",") { bad = 1; return }
        }
        return
      }
      if (c == "\"") { print path "\t" str(); return }
      start = pos
      while (pos <= n && index(",}] \t\r\n", substr(s, pos, 1)) == 0) pos++
      if (pos == start) { bad = 1; return }
      print path "\t" substr(s, start, pos - start)
    }
    { s = s $0 "\n" }
    END { n = length(s); pos = 1; value(""); if (bad || n < 2) exit 1 }
  '
}

now() { date +%s.%N; }
iso_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
free_mib() { on_host df -Pk -- "$containerd_root" 2>/dev/null | awk 'NR == 2 && $4 ~ /^[0-9]+$/ { printf "%d", $4 / 1024 }'; }
# The last line of a command's errors, without ctr's "ctr: " prefix.
last_line() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | sed 's/^ctr: //' | cut -c1-"$MAX_ERROR"; }

# --- 3. registry configuration and credentials, once per registry, before the parallel pulls ---

configure_registries() {
  local item registry repo tag digest
  for item in "${items[@]}"; do
    parse_item "$item"
    prepare_hosts "$registry"
  done
}

# A private hosts directory: the node's registry configuration (mirrors, CAs, plain HTTP), and
# for ECR registries the Authorization header, so the token is never on a command line and never
# printed. Registry credentials come from the node's own role. It is where ctr reads it: here,
# or on Bottlerocket on the host (written there through `on_host`, from files made here).
prepare_hosts() {
  local registry=$1 conf password region creds hosts staged="$workdir/hosts.toml.staged"
  conf="$hosts_dir/$registry/hosts.toml"
  if [ ! -e "$workdir/hosts.ready" ]; then
    if ! on_host mkdir -p -m 0700 "$host_workdir" >/dev/null || ! on_host mkdir -p -m 0700 "$hosts_dir" >/dev/null; then
      log "cannot create $hosts_dir"
    fi
    if on_host test -d "$base_hosts_dir"; then
      on_host cp -R "$base_hosts_dir/." "$hosts_dir/" >/dev/null 2>&1 || log "cannot copy $base_hosts_dir; using defaults"
    fi
    : >"$workdir/hosts.ready"
  fi
  if [[ $registry =~ ^[0-9]{12}\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$ ]] && [ ! -e "$workdir/auth.$registry" ]; then
    region=${BASH_REMATCH[2]}
    password=$(ecr_password "$registry" "$region") || password=''
    if [ -n "$password" ]; then
      creds=$(printf 'AWS:%s' "$password" | base64 | tr -d '\n')
      on_host mkdir -p "$hosts_dir/$registry" >/dev/null
      {
        if on_host test -f "$conf"; then
          on_host cat "$conf"
        else
          printf 'server = "https://%s"\n' "$registry"
        fi
      } >"$staged"
      hosts=$(grep -o '^\[host\."[^"]*"\]' "$staged" | sed 's/^\[host\."\([^"]*\)"\]$/\1/' | sort -u)
      {
        printf '\n[header]\n  Authorization = "Basic %s"\n' "$creds"
        while read -r host; do
          [ -z "$host" ] || printf '\n[host."%s".header]\n  Authorization = "Basic %s"\n' "$host" "$creds"
        done <<<"$hosts"
      } >>"$staged"
      on_host tee "$conf" <"$staged" >/dev/null || log "cannot write $conf"
      rm -f -- "$staged"
    fi
    : >"$workdir/auth.$registry"
  fi
}

# An ECR token from the node's role: the kubelet's credential provider (the EKS AMI's, or
# Bottlerocket's on the host), else the AWS CLI. Both answer on stdout; nothing goes on a command
# line. Only lines that are JSON are read (on Bottlerocket the provider's log lines come along).
ecr_password() {
  local registry=$1 region=$2 provider answer
  for provider in /etc/eks/image-credential-provider/ecr-credential-provider \
    /usr/libexec/kubernetes/kubelet/plugins/ecr-credential-provider \
    /usr/local/bin/ecr-credential-provider "$(command -v ecr-credential-provider 2>/dev/null)"; do
    if [ -z "$provider" ] || ! on_host test -x "$provider"; then
      continue
    fi
    answer=$(printf '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"%s/x"}' \
      "$registry" | on_host "$provider" 2>>"$workdir/auth.err" | grep '^[[:space:]]*{' | json_paths 2>/dev/null |
      awk -F '\t' '$1 ~ /^auth\..*\.password$/ { print $2; exit }')
    if [ -n "$answer" ]; then
      printf '%s' "$answer"
      return 0
    fi
  done
  if command -v aws >/dev/null 2>&1; then
    aws ecr get-login-password --region "$region" 2>>"$workdir/auth.err" && return 0
  fi
  log "no ECR credentials for $registry (no credential provider or AWS CLI answered): $(last_line "$workdir/auth.err")"
  return 1
}

# --- 4. every image, a bounded number at a time ------------------------------------------------

# Each pull writes its line to a file of its own; this shell prints each as soon as it is there
# (one writer on stdout), so a run stopped mid-way has printed every image it finished.
pull_all() {
  local item index=0
  status=0
  for item in "${items[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallelism" ]; do
      wait_for_a_pull
      print_done
    done
    { pull_one "$item" >"$workdir/line.$index" && mv -- "$workdir/line.$index" "$workdir/done.$index"; } &
    index=$((index + 1))
  done
  while [ -n "$(jobs -rp)" ]; do
    wait_for_a_pull
    print_done
  done
  wait
  print_done
}

# Until a pull is done. `wait -n` is bash 4.3: AL2's bash 4.2 refuses it at once, with an error
# on stderr each time round the loop, so there the loop looks again a fifth of a second later.
wait_for_a_pull() {
  if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 403)); then
    wait -n
  else
    sleep 0.2
  fi
}

print_done() {
  local file
  for file in "$workdir"/done.*; do
    [ -e "$file" ] || continue
    cat -- "$file"
    grep -q '"outcome":"failed"' "$file" && status=1
    rm -f -- "$file"
  done
}

# One image, in a background job: its result line on stdout. The steps below read and set
# pull_one's locals: outcome, error and bytes, for the image pinned (registry/repo@digest).
pull_one() {
  local registry repo tag digest pinned started existing outcome=pulled error='' bytes=0 pin_state=false
  local pull_log="$workdir/pull.$BASHPID.log" fetch_errors="$workdir/fetch.$BASHPID.err"
  local tag_errors="$workdir/tag.$BASHPID.err"
  parse_item "$1"
  pinned="$registry/$repo@$digest"
  started=$(now)
  if existing=$(present_ref "$digest"); then
    use_present "$existing"
  else
    pull_with_retries
  fi
  tag_image
  mark_image
  report_image
}

# The name of an image in the namespace with this target digest, complete and unpacked (the
# kubelet may have pulled it under its tag, or only its CRI id may be left).
present_ref() { ctr_ns images check 2>/dev/null | complete_ref "$1"; }
complete_ref() {
  awk -v d="$1" 'NR > 1 && $3 == d && $4 == "complete" && $NF == "true" { print $1; found = 1; exit } END { exit !found }'
}

# Present under the name given: name it by digest too (locally, no registry call; the tag is set
# again by tag_image), and its size from the content store.
use_present() {
  local existing=$1 manifest
  outcome=present
  if [ "$existing" != "$pinned" ] && ! ctr_ns images tag --force "$existing" "$pinned" >/dev/null 2>"$tag_errors"; then
    outcome=failed
    error="present as $existing, but naming it $pinned failed: $(last_line "$tag_errors")"
  fi
  manifest=$(platform_manifest "$pinned" "$registry/$repo" "$hosts_dir" local /dev/null) && bytes=$(printf '%s\n' "$manifest" | layers_bytes)
}

# Transient registry errors (5xx, throttling, resets, timeouts) in reading the manifest or in the
# pull are tried again with backoff; an answer such as 401, 403 or 404 is final. Each try reads
# the manifest and checks the disk again. A step that fails returns 1 if another try may help, 2
# if not.
pull_with_retries() {
  local attempt
  for ((attempt = 1; attempt <= PULL_ATTEMPTS; attempt++)); do
    outcome=pulled
    error=''
    read_manifest || { retry_or_stop "$?" "$fetch_errors" "$attempt" && continue; return; }
    check_disk || return
    pull_image "$attempt" || { retry_or_stop "$?" "$pull_log" "$attempt" && continue; return; }
    return
  done
}

# The manifest for this node's platform, from the registry: sets bytes (config and layers).
read_manifest() {
  local manifest code
  manifest=$(platform_manifest "$pinned" "$registry/$repo" "$hosts_dir" remote "$fetch_errors")
  code=$?
  if [ "$code" -eq 4 ]; then
    outcome=failed
    error="the image has no linux/${node_arch} variant"
    return 2
  elif [ "$code" -ne 0 ]; then
    outcome=failed
    error="cannot read the manifest: $(last_line "$fetch_errors")"
    [ -n "${error#cannot read the manifest: }" ] || error="cannot read the manifest of $pinned"
    return 1
  fi
  bytes=$(printf '%s\n' "$manifest" | layers_bytes)
}

# The manifest for this node's platform, flattened, from the registry or the content store.
platform_manifest() {
  local ref=$1 repo_ref=$2 hosts=$3 source=$4 errors=$5 raw paths child
  if [ "$source" = local ]; then
    raw=$(ctr_ns content get "${ref##*@}" 2>/dev/null) || return 1
  else
    raw=$(ctr_ns content fetch-object --hosts-dir "$hosts" "$ref" 2>"$errors") || return 1
  fi
  paths=$(printf '%s' "$raw" | json_paths) || return 1
  if printf '%s\n' "$paths" | grep -q '^manifests\.0\.digest'; then
    child=$(printf '%s\n' "$paths" | awk -F '\t' -v arch="$node_arch" '
      $1 ~ /^manifests\.[0-9]+\.digest$/ { split($1, p, "."); d[p[2]] = $2 }
      $1 ~ /^manifests\.[0-9]+\.platform\.architecture$/ { split($1, p, "."); a[p[2]] = $2 }
      $1 ~ /^manifests\.[0-9]+\.platform\.os$/ { split($1, p, "."); o[p[2]] = $2 }
      END { for (i in d) if (a[i] == arch && o[i] == "linux") { print d[i]; exit } }')
    [[ $child =~ ^$DIGEST_RE$ ]] || return 4
    platform_manifest "$repo_ref@$child" "$repo_ref" "$hosts" "$source" "$errors"
    return
  fi
  printf '%s\n' "$paths"
}

layers_bytes() { awk -F '\t' '$1 ~ /^(layers\.[0-9]+|config)\.size$/ { total += $2 } END { printf "%d", total }'; }

# The disk guard: skipped-disk, and nothing downloaded, if the image (layers and unpacking) would
# leave less than MinFreeDiskMiB free on containerd's root.
check_disk() {
  local need_mib free
  need_mib=$(((bytes * (1 + UNPACK_FACTOR) + 1048575) / 1048576))
  free=$(free_mib)
  if [ -n "$free" ] && [ $((free - need_mib)) -lt "$min_free_mib" ]; then
    outcome=skipped-disk
    error="needs about ${need_mib} MiB (layers and unpacking), ${free} MiB free on ${containerd_root}, MinFreeDiskMiB ${min_free_mib}: missing $((min_free_mib + need_mib - free)) MiB"
    return 1
  fi
}

# One `ctr images pull` by digest, labelled as this agent's, within PullTimeoutSeconds.
pull_image() {
  local attempt=$1 code
  log "pulling $pinned ($((bytes / 1048576)) MiB, try $attempt)"
  timeout --kill-after=10 "$pull_timeout" "${ctr_cmd[@]}" --namespace "$NAMESPACE" images pull \
    --hosts-dir "$hosts_dir" --label "$MARK_LABEL=true" "$pinned" >"$pull_log" 2>&1
  code=$?
  [ "$code" -eq 0 ] && return 0
  outcome=failed
  error=$(last_line "$pull_log")
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    error="the pull took longer than PullTimeoutSeconds (${pull_timeout} s)"
    return 2
  fi
  return 1
}

# After a failed step ($1: its return code, $2: its errors, $3: the try): pause and succeed if
# another try may help.
retry_or_stop() {
  if [ "$1" -eq 1 ] && [ "$3" -lt "$PULL_ATTEMPTS" ] && transient "$2"; then
    log "transient registry error for $pinned (try $3 of $PULL_ATTEMPTS): $error"
    sleep $((2 ** $3))
    return 0
  fi
  return 1
}

transient() {
  # Registry answers that another try can fix: 5xx, throttling, resets, timeouts. Not 401/403/404.
  grep -qiE '(unauthorized|forbidden|denied|not found|401|403|404|manifest unknown)' "$1" && return 1
  grep -qiE '(50[0-9]|429|too many requests|connection reset|connection refused|i/o timeout|timeout|tls handshake|EOF|temporary|unavailable)' "$1"
}

# The tag makes the image resolvable under the name Pods use (IfNotPresent starts at once).
tag_image() {
  if { [ "$outcome" = pulled ] || [ "$outcome" = present ]; } && [ -n "$tag" ] &&
    ! ctr_ns images tag --force "$pinned" "$registry/$repo:$tag" >/dev/null 2>"$tag_errors"; then
    outcome=failed
    error="tagging $registry/$repo:$tag failed: $(last_line "$tag_errors")"
  fi
}

# Delivered (pulled or present, and tagged): labelled with when, and pinned against the kubelet's
# image GC (PinImages), in one label update of the digest-named record. A record that carries the
# CRI pin without this agent's label was pinned by someone else: left exactly as it is.
mark_image() {
  local labels pinning=false
  [ "$outcome" = pulled ] || [ "$outcome" = present ] || return 0
  labels=("$DELIVERED_LABEL=$(iso_now)")
  if digest_pinned "$digest"; then
    pin_state=true # pinned already, by this agent or by someone else: left as it is
  elif [ "$pin_images" = true ]; then
    labels+=("$PIN_LABEL=$PIN_VALUE" "$OWN_PIN_LABEL=true")
    pinning=true
  fi
  if ctr_ns images label "$pinned" "${labels[@]}" >/dev/null 2>"$tag_errors"; then
    [ "$pinning" = false ] || pin_state=true
  else
    log "labelling $pinned failed: $(last_line "$tag_errors")"
  fi
}

report_image() {
  printf '{"image":"%s","digest":"%s","tag":"%s","outcome":"%s","bytes":%d,"seconds":%s,"error":"%s","pinned":%s}\n' \
    "$pinned" "$digest" "$tag" "$outcome" "${bytes:-0}" "$(elapsed "$started" "$(now)")" "$(clean_text "$error")" "$pin_state"
}

# Whether the image record of this name carries the label key=value.
record_has_label() {
  [ -n "$(ctr_ns images ls -q "name==$1,labels.\"${2%%=*}\"==${2#*=}" 2>/dev/null)" ]
}

# Whether an image with this target digest carries the CRI pin, under any of its names (the CRI
# plugin pins the image if one of its names is pinned).
digest_pinned() {
  [ -n "$(ctr_ns images ls -q "target.digest==$1,labels.\"$PIN_LABEL\"==$PIN_VALUE" 2>/dev/null)" ]
}

# Remove this agent's pin from a record (never a pin it did not set: only records with its own
# label come here).
unpin() {
  if ctr_ns images label "$1" "$PIN_LABEL=" "$OWN_PIN_LABEL=" >/dev/null 2>&1; then
    log "unpinned $1 ($2)"
  else
    log "unpinning $1 failed"
  fi
}

# --- 5. finish ---------------------------------------------------------------------------------

finish() {
  unpin_superseded
  [ "$cleanup" = true ] && cleanup_superseded
  exit "$status"
}

# The pins this agent set on other digests of the repositories just pulled, where no tag names
# that digest any more (the tag moved to the new one) and it is not one of this command's images:
# superseded, so unpinned (whatever PinImages says: they are this agent's own pins).
unpin_superseded() {
  local item registry repo tag digest images ours name target current=' ' done=' '
  images=$(ctr_ns images ls 2>/dev/null) || return 0
  ours=$(printf '%s\n' "$images" | awk -v label="$OWN_PIN_LABEL=true" 'NR > 1 && index($0, label) > 0 { print $1 "\t" $3 }')
  [ -n "$ours" ] || return 0
  for item in "${items[@]}"; do
    parse_item "$item"
    current+="$registry/$repo@$digest "
  done
  for item in "${items[@]}"; do
    parse_item "$item"
    [ -n "$tag" ] || continue
    while IFS=$'\t' read -r name target; do
      if [ "${name%@*}" != "$registry/$repo" ] || [[ $current == *" $name "* ]] || [[ $done == *" $name "* ]]; then
        continue
      fi
      if printf '%s\n' "$images" | awk -v t="$target" 'NR > 1 && $3 == t { print $1 }' | grep -v '@' | grep -qv '^sha256:'; then
        continue
      fi
      unpin "$name" "superseded by $registry/$repo:$tag@$digest"
      done+="$name "
    done <<<"$ours"
  done
}

# Opt-in (CleanupSuperseded): superseded digests this agent pulled, that nothing uses.
cleanup_superseded() {
  local item registry repo tag digest images containers refs ref target
  images=$(ctr_ns images ls 2>/dev/null) || return 0
  containers=$(ctr_ns containers ls 2>/dev/null | awk 'NR > 1 { print $2 }')
  for item in "${items[@]}"; do
    parse_item "$item"
    # Our digest references of the same repository, other than the one just pulled.
    printf '%s\n' "$images" | awk -v prefix="$registry/$repo@" -v keep="$digest" -v label="$MARK_LABEL=true" '
      NR > 1 && index($1, prefix) == 1 && $3 != keep && index($0, label) > 0 { print $3 }' | sort -u |
      while read -r target; do
        # Every name of that image: if a tag still points to it, or a container uses any of
        # them, it is not superseded or not unused.
        refs=$(printf '%s\n' "$images" | awk -v t="$target" 'NR > 1 && $3 == t { print $1 }')
        if printf '%s\n' "$refs" | grep -v '@' | grep -qv '^sha256:'; then
          log "cleanup: keeping $target (a tag still points to it)"
          continue
        fi
        if printf '%s\n' "$refs" | grep -qxF -f <(printf '%s\n' "$containers" | grep -v '^$' || true); then
          log "cleanup: keeping $target (a container uses it)"
          continue
        fi
        while read -r ref; do
          [ -n "$ref" ] || continue
          ctr_ns images rm "$ref" >/dev/null 2>&1 && log "cleanup: removed $ref"
        done <<<"$refs"
      done
  done
}

# --- Mode=inventory: what is on this node, nothing pulled ---------------------------------------

# One line per image, printed as soon as it is known: each of the Images given (the cluster's
# current images), then every other image this agent delivered that is still here (its label,
# on a digest-named record); then the disk line, and exit 0. No registry is called. Pins first:
# this agent's pins on other digests of the repositories given are removed (all of its pins with
# PinImages=false); a current image that is present is pinned as after a pull (PinImages=true).
# The lines stop short of what the SSM agent keeps: the images left out are counted in `more`.
inventory() {
  local checks images item registry repo tag digest name printed=0 more=0 reported=' '
  if ! checks=$(ctr_ns images check 2>"$workdir/inventory.err") || ! images=$(ctr_ns images ls 2>"$workdir/inventory.err"); then
    fatal 3 "cannot list the images of containerd's ${NAMESPACE} namespace: $(last_line "$workdir/inventory.err")"
  fi
  unpin_not_current
  for item in "${items[@]}"; do
    parse_item "$item"
    inventory_line current
  done
  while read -r name; do
    [[ $name =~ $ITEM_RE ]] || continue
    parse_item "$name"
    if [ "${#registry}" -gt 255 ] || [ "${#repo}" -gt 256 ]; then
      continue
    fi
    tag=$(printf '%s\n' "$images" | awk -v prefix="$registry/$repo:" -v d="$digest" '
      NR > 1 && $3 == d && index($1, prefix) == 1 { print substr($1, length(prefix) + 1); exit }')
    [[ $tag =~ ^${TAG_RE}$ ]] || tag=''
    inventory_line delivered
  done < <(printf '%s\n' "$images" | awk -v a="$DELIVERED_LABEL=" -v b="$MARK_LABEL=" -v c="$OWN_PIN_LABEL=" '
    NR > 1 && index($1, "@") > 0 && (index($0, a) > 0 || index($0, b) > 0 || index($0, c) > 0) { print $1 }')
  disk_line
  exit 0
}

# This agent's pins on the repositories given, on digests that are not given (or all of its pins,
# PinImages=false). A command names every current tag of each repository it names (the senders
# keep a repository's images together), so a pin on any other digest of it is a stale one.
unpin_not_current() {
  local item registry repo tag digest name repos=' ' current=' '
  for item in "${items[@]}"; do
    parse_item "$item"
    repos+="$registry/$repo "
    current+="$registry/$repo@$digest "
  done
  while read -r name; do
    [ -n "$name" ] || continue
    if [ "$pin_images" = false ]; then
      unpin "$name" "PinImages=false"
    elif [[ $repos == *" ${name%@*} "* ]] && [[ $current != *" $name "* ]]; then
      unpin "$name" "not a current image"
    fi
  done < <(printf '%s\n' "$images" | awk -v label="$OWN_PIN_LABEL=true" 'NR > 1 && index($0, label) > 0 { print $1 }')
}

# The line of registry/repo@digest (the caller's registry, repo, tag, digest): present if an image
# with that digest is complete and unpacked (under any name), sized from the content store. $1:
# current (one of the Images: pinned if present and PinImages) or delivered (never pinned here).
inventory_line() {
  local ref="$registry/$repo@$digest" outcome=absent bytes=0 pin_state=false manifest
  [[ $reported != *" $ref "* ]] || return 0
  reported+="$ref "
  if printf '%s\n' "$checks" | complete_ref "$digest" >/dev/null; then
    outcome=present
    manifest=$(platform_manifest "$ref" "$registry/$repo" "$hosts_dir" local /dev/null) &&
      bytes=$(printf '%s\n' "$manifest" | layers_bytes)
    if [ "$1" = current ] && [ "$pin_images" = true ] && printf '%s\n' "$images" | awk -v n="$ref" 'NR > 1 && $1 == n { found = 1 } END { exit !found }' &&
      ! record_has_label "$ref" "$PIN_LABEL=$PIN_VALUE"; then
      ctr_ns images label "$ref" "$PIN_LABEL=$PIN_VALUE" "$OWN_PIN_LABEL=true" >/dev/null 2>&1 || log "pinning $ref failed"
    fi
  fi
  digest_pinned "$digest" && pin_state=true
  emit_line "$(printf '{"image":"%s","digest":"%s","tag":"%s","outcome":"%s","bytes":%d,"seconds":0,"error":"","pinned":%s}' \
    "$ref" "$digest" "$tag" "$outcome" "${bytes:-0}" "$pin_state")"
}

# A result line if it fits before the disk line within what the SSM agent keeps; else counted.
emit_line() {
  if [ $((printed + ${#1} + 1)) -le $((STDOUT_KEEP - DISK_LINE_MAX)) ]; then
    printf '%s\n' "$1"
    printed=$((printed + ${#1} + 1))
  else
    more=$((more + 1))
  fi
}

# containerd's disk: free and total bytes (0 if df cannot say), and how many images were left out.
disk_line() {
  local sizes total=0 free=0
  sizes=$(on_host df -Pk -- "$containerd_root" 2>/dev/null | awk 'NR == 2 && $2 ~ /^[0-9]+$/ && $4 ~ /^[0-9]+$/ { print $2, $4 }')
  if [[ $sizes =~ ^([0-9]{1,15})\ ([0-9]{1,15})$ ]]; then
    total=$((BASH_REMATCH[1] * 1024))
    free=$((BASH_REMATCH[2] * 1024))
  else
    log "cannot read the free space of $containerd_root"
  fi
  printf '{"disk":{"path":"%s","free_bytes":%d,"total_bytes":%d,"more":%d}%s\n' "$(clean_text "$containerd_root")" "$free" "$total" "$more" '}'
}

# --- main --------------------------------------------------------------------------------------

main() {
  read_parameters      # 1. SSM_* read and checked; any rejected value: a fatal line, exit 2
  prepare              # 2. the way to containerd (none: a fatal line, exit 3), the work directory
  if [ "$mode" = inventory ]; then
    inventory          # Mode=inventory: what is here, a line per image, then the disk; exit 0
  fi
  configure_registries # 3. each registry's configuration, with its ECR credentials, for ctr
  pull_all             # 4. every image, Parallelism at a time, its line printed once it is done
  finish               # 5. unpin superseded digests, the opt-in cleanup, exit 0 unless one failed
}

main "$@"
