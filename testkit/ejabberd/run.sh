#!/bin/bash
# Throwaway ejabberd 23.01 (Debian bookworm package) for integration tests.
#
#   run.sh <dir> <http_port>
#
# Creates <dir>/{ejabberd.yml,db/,log/,.erlang.cookie,ejabberd.pid} and then
# EXECs the Erlang VM in the foreground: the PID of this script becomes the
# beam.smp PID, so the caller owns the server process directly.
#   stop:  kill -TERM <pid>  (graceful, ~1-2 s)   or  kill -KILL <pid>
#   ready: wait for "missive-ejabberd-ready" on stdout (printed once the archive tables are
#          converted: traffic during the conversion may not be archived), then poll
#          127.0.0.1:<http_port> until it accepts (~1.0-1.9 s) AND check
#          the child is still alive (a port clash makes ejabberd exit rc=1 after
#          ~1.2 s while the OTHER process's port answers). The very first XMPP
#          request after the port opens may take up to ~0.7 s (startup tail);
#          use a generous first-response timeout, or wait for <stream:features/>.
#   one <dir> per running instance (mnesia must not be shared).
#
# The VM runs as the CURRENT user (no `su ejabberd` like ejabberdctl does) and
# WITHOUT Erlang distribution by default: no epmd, no distribution port, no
# node-name clashes -> any number of instances can run side by side, each only
# needs its own <dir> and <http_port>.
#
# Optional environment:
#   EJ_LOGLEVEL=info|warning|error|debug   (default warning) -> <dir>/log/ejabberd.log
#   EJ_DIST_PORT=<port>  enable Erlang distribution (needed only for ejabberdctl /
#                        remote shell) WITHOUT epmd: node listens on 127.0.0.1:<port>.
#                        Then use ./ctl.sh <dir> <ejabberdctl command...>.
#                        Don't toggle this on an existing <dir>: the mnesia schema
#                        is bound to the node name (nonode@nohost vs ej_<hash>@localhost).
#   EJ_NODE=<name>@localhost  cluster mode: Erlang distribution as node <name>@localhost,
#                        registered with a PRIVATE epmd on 127.0.0.1:$EJ_EPMD_PORT that the
#                        caller runs (`epmd -address 127.0.0.1 -port $EJ_EPMD_PORT`; erl never
#                        starts one), listening on 127.0.0.1:$EJ_LISTEN_PORT, cookie $EJ_COOKIE
#                        (all three required). Prints "missive-ejabberd-tables
#                        [{Table,LocalStorageType,[Node...]}]" (where each table is written)
#                        before the ready line.
#   EJ_JOIN=<node>       with EJ_NODE: once started, wait (up to 60 s) until ejabberd runs on
#                        <node>, then join its cluster (ejabberd_admin:join_cluster, as
#                        `ejabberdctl join_cluster`: this node's own data is replaced by the
#                        cluster's, every table copied here with the storage type it has there,
#                        ejabberd restarted); prints "missive-ejabberd-join-failed <reason>" and
#                        exits 1 when that fails. Only for the first start: a member restarts
#                        without it and mnesia catches up from the running members.
#   EJ_TEMPLATE=<file>   config template (default: ejabberd.yml.template next to this script)
#   EJ_ARCHIVE_STORAGE=disc_copies|disc_only_copies|ram_copies
#                        mnesia storage of the MAM + offline tables (default disc_copies;
#                        ejabberd's own default disc_only_copies is quadratic, see below)
#   EJ_OFFLINE=0         disable mod_offline (no offline storage / flood at login)
#   EJ_FRESH=1           wipe <dir>/db before starting (accounts/archives/rooms lost)
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 <dir> <http_port>" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DIR="$(mkdir -p "$1" && cd "$1" && pwd -P)"
PORT="$2"
case "$PORT" in ''|*[!0-9]*) echo "bad port: $PORT" >&2; exit 2;; esac

TEMPLATE="${EJ_TEMPLATE:-$HERE/ejabberd.yml.template}"
LOGLEVEL="${EJ_LOGLEVEL:-warning}"
EJ_LIBDIR=/usr/lib/x86_64-linux-gnu        # contains ejabberd-23.01/ (Debian layout)

[ "${EJ_FRESH:-0}" = 1 ] && rm -rf "$DIR/db"
mkdir -p "$DIR/db" "$DIR/log"

SED_EXTRA=()
[ "${EJ_OFFLINE:-1}" = 0 ] && SED_EXTRA=(-e '/## BEGIN mod_offline/,/## END mod_offline/d')
sed -e "s/@@HTTP_PORT@@/$PORT/g" -e "s/@@LOGLEVEL@@/$LOGLEVEL/g" "${SED_EXTRA[@]}" \
    "$TEMPLATE" > "$DIR/ejabberd.yml"

# ejabberd_mnesia reads <mnesia dir>/ejabberd.schema (YAML) to override table
# storage. mod_mam's archive_msg and mod_offline's offline_msg are dets-backed
# bags (disc_only_copies) by default: each insert re-reads all records under the
# user's key -> O(n) per message, quadratic overall (3000 msgs to one user: 43 s).
# disc_copies = ETS in RAM + transaction log on disk: same semantics, persistent.
# ejabberd 23.01 ignores this file when it CREATES a table (it only applies it to
# existing tables on later starts), hence also the -eval after `-s ejabberd` below,
# which converts the freshly created tables right after startup.
STORAGE="${EJ_ARCHIVE_STORAGE:-disc_copies}"
case "$STORAGE" in disc_copies|disc_only_copies|ram_copies) ;; *) echo "bad EJ_ARCHIVE_STORAGE" >&2; exit 2;; esac
cat > "$DIR/db/ejabberd.schema" <<EOS
archive_msg:
  storage_type: $STORAGE
offline_msg:
  storage_type: $STORAGE
EOS

# Erlang cookie (only used when EJ_DIST_PORT is set, created anyway).
if [ ! -s "$DIR/.erlang.cookie" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/.erlang.cookie")
fi
chmod 400 "$DIR/.erlang.cookie"

# Same host map as /etc/ejabberd/inetrc (localhost -> 127.0.0.1, no DNS).
cat > "$DIR/inetrc" <<'EOF'
{lookup,["file","native"]}.
{host,{127,0,0,1}, ["localhost"]}.
{file, resolv, "/etc/resolv.conf"}.
EOF

export HOME="$DIR"                          # erl looks for ~/.erlang.cookie
export ERL_LIBS="$EJ_LIBDIR"
export EJABBERD_CONFIG_PATH="$DIR/ejabberd.yml"
export EJABBERD_LOG_PATH="$DIR/log/ejabberd.log"
export EJABBERD_PID_PATH="$DIR/ejabberd.pid"
export ERL_INETRC="$DIR/inetrc"
export ERL_CRASH_DUMP="$DIR/log/erl_crash.dump"
export ERL_CRASH_DUMP_BYTES=0               # don't write crash dumps
unset ERL_EPMD_PORT ERL_DIST_PORT || true

DIST_ARGS=()
JOIN=""
TABLES=""
if [ -n "${EJ_NODE:-}" ]; then
    : "${EJ_EPMD_PORT:?EJ_NODE needs EJ_EPMD_PORT}" "${EJ_LISTEN_PORT:?EJ_NODE needs EJ_LISTEN_PORT}" "${EJ_COOKIE:?EJ_NODE needs EJ_COOKIE}"
    export ERL_EPMD_PORT="$EJ_EPMD_PORT"
    DIST_ARGS=(-sname "$EJ_NODE" -setcookie "$EJ_COOKIE" -start_epmd false
               -kernel inet_dist_use_interface '{127,0,0,1}'
               -kernel inet_dist_listen_min "$EJ_LISTEN_PORT" inet_dist_listen_max "$EJ_LISTEN_PORT")
    if [ -n "${EJ_JOIN:-}" ]; then
        # Started alongside <node>: wait (up to 60 s) until ejabberd runs there.
        JOIN="Seed = '$EJ_JOIN', SeedUp = (fun Wait(0) -> false; Wait(K) -> case catch lists:keymember(ejabberd, 1, rpc:call(Seed, application, which_applications, [], 2000)) of true -> true; _ -> timer:sleep(100), Wait(K - 1) end end)(600),
              case SeedUp andalso ejabberd_admin:join_cluster(atom_to_binary(Seed)) of ok -> ok; JoinError -> io:format(\"missive-ejabberd-join-failed ~p~n\", [JoinError]), erlang:halt(1) end,"
    fi
    TABLES="mnesia:wait_for_tables(mnesia:system_info(local_tables), 60000), io:format(\"missive-ejabberd-tables ~w~n\", [[{T, mnesia:table_info(T, storage_type), lists:sort(mnesia:table_info(T, where_to_write))} || T <- lists:sort(mnesia:system_info(tables) -- [schema])]]),"
    rm -f "$DIR/dist.port"
elif [ -n "${EJ_DIST_PORT:-}" ]; then
    # Stable per-dir node name (mnesia schema is bound to it).
    if [ ! -s "$DIR/node.name" ]; then
        echo "ej_$(printf '%s' "$DIR" | md5sum | cut -c1-10)@localhost" > "$DIR/node.name"
    fi
    DIST_ARGS=(-sname "$(cat "$DIR/node.name")" -setcookie "$(cat "$DIR/.erlang.cookie")"
               -start_epmd false -erl_epmd_port "$EJ_DIST_PORT"
               -kernel inet_dist_use_interface '{127,0,0,1}')
    echo "$EJ_DIST_PORT" > "$DIR/dist.port"
else
    rm -f "$DIR/dist.port"
fi

cd "$DIR"
echo $$ > "$DIR/run.pid"    # == beam.smp pid after the exec chain (erl -> erlexec -> beam.smp)

# +sbwt none...: no scheduler busy-waiting (be nice to a busy 2-core box).
exec /usr/bin/erl -noinput \
    "${DIST_ARGS[@]}" \
    +K true +P 250000 -env ERL_MAX_PORTS 32000 \
    +sbwt none +sbwtdcpu none +sbwtdio none \
    -mnesia dir "\"$DIR/db\"" \
    -ejabberd log_rotate_count 0 \
    -s ejabberd \
    -eval "$JOIN [catch mnesia:change_table_copy_type(T, node(), $STORAGE) || T <- [archive_msg, offline_msg]], $TABLES io:format(\"missive-ejabberd-ready~n\")"
