#!/usr/bin/env bash
# Installs mcp-bridge: its binaries, its systemd units, and example
# configuration. `deploy/install.sh --help` says how; deploy/README.md says why.
#
# Idempotent: a file already as it should be is left alone, so a second run
# changes nothing, and an env file that exists is never touched.
set -euo pipefail

ALL_BINARIES=(bridge-mcp bridgectl keepalive-daemon fs-watcher check-messages watchdog-monitor reassign-tasks)
# A worker machine (--worker) runs only its daemons, speaking to the hub.
WORKER_BINARIES=(keepalive-daemon fs-watcher check-messages)
WORKER_UNITS=(bridge-keepalive-remote@.service bridge-fs-watcher-remote@.service)
WORKER_ENV_FILES=(remote.env)
# Env files created (from their examples) only if they do not exist; every
# file of deploy/env is also installed as <name>.example.
CREATED_ENV_FILES=(watchdog.env mcp-http.env)
readonly SERVICE_USER=mcp-bridge
readonly STATE_DIR=/var/lib/mcp-bridge
readonly SYSTEM_CONFIG_DIR=/etc/mcp-bridge
# The paths that the files of systemd/ and deploy/env name: those of the
# default prefix, rewritten for another.
readonly SOURCE_BIN_DIR=/usr/local/bin
readonly SOURCE_CONFIG_DIR=/etc/mcp-bridge

program=install.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<EOF
Usage: deploy/install.sh [--worker] [--prefix DIR] [--bin-dir DIR] [--dry-run] [--uninstall]

Installs the mcp-bridge binaries into DIR/bin, its systemd units into
DIR/lib/systemd/system, and example env files into the configuration
directory: /etc/mcp-bridge for the prefixes /usr and /usr/local, otherwise
DIR/etc/mcp-bridge. The units are rewritten to name those paths.

A system install (prefix /usr or /usr/local) run as root also creates the
system user $SERVICE_USER and $STATE_DIR (the database's directory), and
runs systemctl daemon-reload if systemd is running. Any other prefix is a
staged install: no user, nothing outside DIR.

With --worker, only what a worker machine needs: ${WORKER_BINARIES[*]},
the units ${WORKER_UNITS[*]}
(which reach the hub over HTTPS, each run as a user of its own), and
remote.env; no system user, no database directory.

Options:
  --worker       install only what a worker machine needs (see above)
  --prefix DIR   where to install [default: /usr/local]
  --bin-dir DIR  take the binaries from DIR (e.g. target/release) instead of
                 running cargo build --release --workspace --bins
  --dry-run      print every action, change nothing
  --uninstall    remove the binaries, units and examples installed; keep the
                 env files, the tokens and the database
  -h, --help     print this help

Binaries: ${ALL_BINARIES[*]}
EOF
}

# A usage error: exit code 2, as the binaries' command lines do.
usage_error() {
    printf '%s: %s\nTry '\''%s --help'\''.\n' "$program" "$1" "$program" >&2
    exit 2
}

die() {
    printf '%s: %s\n' "$program" "$1" >&2
    exit 1
}

prefix=/usr/local
bin_dir=
dry_run=false
uninstall=false
worker=false
while (($#)); do
    case $1 in
        --prefix | --bin-dir)
            (($# >= 2)) || usage_error "$1 needs a directory"
            if [[ $1 == --prefix ]]; then prefix=$2; else bin_dir=$2; fi
            shift 2
            ;;
        --prefix=*) prefix=${1#*=} && shift ;;
        --bin-dir=*) bin_dir=${1#*=} && shift ;;
        --dry-run) dry_run=true && shift ;;
        --uninstall) uninstall=true && shift ;;
        --worker) worker=true && shift ;;
        -h | --help) usage && exit 0 ;;
        *) usage_error "unknown option: $1" ;;
    esac
done

[[ -n $prefix ]] || usage_error "--prefix needs a directory"
[[ $prefix == /* ]] || prefix=$PWD/$prefix
while [[ $prefix == */ && $prefix != / ]]; do prefix=${prefix%/}; done
# The prefix is written into unit files, where spaces, % and $ mean something.
[[ $prefix =~ ^[A-Za-z0-9._/+@-]+$ ]] ||
    usage_error "--prefix $prefix: use only letters, digits and . _ / + @ - (it is written into systemd units)"
[[ $prefix != / ]] || usage_error "--prefix / is not a prefix; try /usr or /usr/local"

dest_bin=$prefix/bin
dest_units=$prefix/lib/systemd/system
case $prefix in
    /usr | /usr/local) config_dir=$SYSTEM_CONFIG_DIR system=true ;;
    *) config_dir=$prefix/etc/mcp-bridge system=false ;;
esac
is_root=false
[[ $(id -u) -eq 0 ]] && is_root=true
systemd_running=false
[[ -d /run/systemd/system ]] && systemd_running=true
# The group of the configuration on a system install: the services read the
# tokens in it.
config_group=
$system && config_group=$SERVICE_USER

if $worker; then
    BINARIES=("${WORKER_BINARIES[@]}")
    units=("${WORKER_UNITS[@]}")
    env_files=("${WORKER_ENV_FILES[@]}")
    CREATED_ENV_FILES=("${WORKER_ENV_FILES[@]}")
    # No service user: the units run as dynamic users, which read the CA
    # file of remote.env (tokens come as credentials, read by systemd).
    config_group=
    config_mode=0755
else
    config_mode=0750
    BINARIES=("${ALL_BINARIES[@]}")
    units=()
    for unit in "$root"/systemd/*.service; do units+=("${unit##*/}"); done
    env_files=()
    for env in "$root"/deploy/env/*.env; do env_files+=("${env##*/}"); done
fi
readonly BINARIES CREATED_ENV_FILES

changed=0
unchanged=0

# Prints an action, `+ SHOWN`, and runs the command that follows unless this
# is a dry run.
run() {
    local shown=$1
    shift
    printf '+ %s\n' "$shown"
    changed=$((changed + 1))
    $dry_run || "$@"
}

# Prints a command and runs it unless this is a dry run.
act() {
    local shown
    shown=$(printf '%q ' "$@")
    run "${shown% }" "$@"
}

say() {
    printf '%s\n' "$*"
}

# The text of a file of this repository with the default prefix's paths
# replaced by this install's. (Quoted replacements: a & stays a &.)
rewritten() {
    local text
    text=$(<"$1")
    text=${text//"$SOURCE_BIN_DIR/"/"$dest_bin/"}
    text=${text//"$SOURCE_CONFIG_DIR"/"$config_dir"}
    printf '%s\n' "$text"
}

# Whether PATH exists with MODE (e.g. 0640) and, if given, GROUP.
has_mode() {
    local path=$1 mode=$2 group=${3-}
    [[ -e $path && $(stat -c %a "$path") == "${mode#0}" ]] &&
        [[ -z $group || $(stat -c %G "$path") == "$group" ]]
}

# Creates directory DIR with MODE (and GROUP) if it is missing; with
# --fix-mode, also corrects the mode and group of one that exists.
ensure_dir() {
    local fix=false
    if [[ $1 == --fix-mode ]]; then fix=true && shift; fi
    local dir=$1 mode=$2 group=${3-}
    if [[ ! -d $dir ]]; then
        act install -d -m "$mode" ${group:+-g "$group"} "$dir"
    elif $fix && ! has_mode "$dir" "$mode" "$group"; then
        act chmod "$mode" "$dir"
        [[ -z $group ]] || act chgrp "$group" "$dir"
    fi
}

# Installs SOURCE as DEST with MODE (and GROUP), unless DEST already has that
# content, mode and group. SHOWN names the source in the printed action.
install_file() {
    local mode=$1 source=$2 dest=$3 group=${4-} shown=${5-$2}
    if [[ -f $dest ]] && cmp -s "$source" "$dest" && has_mode "$dest" "$mode" "$group"; then
        unchanged=$((unchanged + 1))
        return
    fi
    run "install -m $mode ${group:+-g $group }$shown $dest" \
        install -m "$mode" ${group:+-g "$group"} "$source" "$dest"
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# Removes PATH if it exists.
remove() {
    if [[ -e $1 || -L $1 ]]; then act rm -f "$1"; fi
}

uninstall() {
    if $system && $is_root && $systemd_running && $worker; then
        act systemctl stop 'bridge-keepalive-remote@*.service' 'bridge-fs-watcher-remote@*.service' ||
            say "warning: systemctl could not stop the bridge-keepalive-remote@ and bridge-fs-watcher-remote@ instances"
        act systemctl disable "${WORKER_UNITS[@]}" ||
            say "warning: systemctl could not disable the bridge-keepalive-remote@ and bridge-fs-watcher-remote@ instances"
    elif $system && $is_root && $systemd_running; then
        # Stopped before their binaries go; a failure here is reported, not fatal.
        act systemctl disable --now bridge-mcp-http.service bridge-watchdog.service ||
            say "warning: systemctl could not stop or disable bridge-mcp-http and bridge-watchdog"
        act systemctl stop 'bridge-keepalive@*.service' 'bridge-fs-watcher@*.service' ||
            say "warning: systemctl could not stop the bridge-keepalive@ and bridge-fs-watcher@ instances"
        act systemctl disable bridge-keepalive@.service bridge-fs-watcher@.service ||
            say "warning: systemctl could not disable the bridge-keepalive@ and bridge-fs-watcher@ instances"
    fi
    local name
    for name in "${BINARIES[@]}"; do remove "$dest_bin/$name"; done
    for name in "${units[@]}"; do remove "$dest_units/$name"; done
    for name in "${env_files[@]}"; do remove "$config_dir/$name.example"; done
    if $system && $is_root && $systemd_running; then
        act systemctl daemon-reload
    fi
    say "kept: $config_dir (env files and tokens)"
    if $system && ! $worker; then
        say "kept: $STATE_DIR (the database and its key) and the user $SERVICE_USER"
        say "remove them by hand if you want: rm -r $config_dir $STATE_DIR; userdel $SERVICE_USER"
    fi
}

install_all() {
    # The binaries, checked before anything changes.
    local source_bin
    if [[ -n $bin_dir ]]; then
        source_bin=$(cd "$bin_dir" 2>/dev/null && pwd) ||
            die "--bin-dir $bin_dir is not a directory"
        local missing=() name
        for name in "${BINARIES[@]}"; do
            [[ -f $source_bin/$name && -x $source_bin/$name ]] || missing+=("$name")
        done
        ((${#missing[@]} == 0)) ||
            die "--bin-dir $source_bin lacks ${missing[*]} (build them with cargo build --release --workspace --bins)"
    else
        command -v cargo >/dev/null ||
            die "cargo not found: build as yourself (cargo build --release --workspace --bins), then pass --bin-dir target/release"
        act cargo build --release --workspace --bins --manifest-path "$root/Cargo.toml"
        source_bin=${CARGO_TARGET_DIR:-$root/target}/release
    fi

    if $system && ! $worker; then
        if ! getent passwd "$SERVICE_USER" >/dev/null; then
            local nologin
            nologin=$(command -v nologin || echo /usr/sbin/nologin)
            act useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
                --shell "$nologin" --comment "mcp-bridge services" "$SERVICE_USER"
        fi
        [[ -d $STATE_DIR ]] ||
            act install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0700 "$STATE_DIR"
    elif ! $system; then
        say "skipped: the user $SERVICE_USER, $STATE_DIR and systemctl daemon-reload (for a system install only: --prefix /usr or /usr/local)"
    fi

    ensure_dir "$dest_bin" 0755
    local name
    for name in "${BINARIES[@]}"; do
        install_file 0755 "$source_bin/$name" "$dest_bin/$name"
    done

    ensure_dir "$dest_units" 0755
    local unit
    for unit in "${units[@]}"; do
        rewritten "$root/systemd/$unit" >"$stage/$unit"
        install_file 0644 "$stage/$unit" "$dest_units/$unit" "" "systemd/$unit"
    done

    ensure_dir --fix-mode "$config_dir" "$config_mode" "$config_group"
    local env
    for env in "${env_files[@]}"; do
        rewritten "$root/deploy/env/$env" >"$stage/$env"
        install_file 0640 "$stage/$env" "$config_dir/$env.example" "$config_group" "deploy/env/$env"
    done
    for env in "${CREATED_ENV_FILES[@]}"; do
        if [[ -e $config_dir/$env ]]; then
            unchanged=$((unchanged + 1))
        else
            install_file 0600 "$stage/$env" "$config_dir/$env" "" "deploy/env/$env"
        fi
    done

    if $system; then
        if $is_root && $systemd_running; then
            act systemctl daemon-reload
        else
            say "skipped: systemctl daemon-reload (systemd is not running here)"
        fi
    fi
}

if $system && ! $is_root && ! $dry_run; then
    die "a system install (--prefix $prefix) needs root: run it with sudo, or give another --prefix"
fi
$dry_run && say "dry run: printing the actions, changing nothing"
if $uninstall; then
    uninstall
else
    install_all
fi
if $dry_run; then
    say "dry run: $changed actions, $unchanged files already up to date"
else
    say "done: $changed actions, $unchanged files already up to date"
fi
