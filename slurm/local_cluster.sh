#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for the tests marked `slurm` and for users without a cluster.
#
#   slurm/local_cluster.sh up       install what is missing (Debian packages), write configs, start daemons,
#                                   wait until both nodes are idle (idempotent: a running daemon is left alone)
#   slurm/local_cluster.sh down     stop every daemon this script started, each by its PID
#   slurm/local_cluster.sh status   daemons, PIDs and `sinfo`
#
# Layout: everything lives under $MATHFIRST_SLURM_DIR (default /var/lib/mathfirst-slurm): etc/ (slurm.conf,
# slurmdbd.conf), mysql/ (a private MariaDB data dir), state/, spool/, run/ (PID files), log/.
# /etc/slurm/slurm.conf is a symlink to etc/slurm.conf so that sbatch/sacct/submitit find it without SLURM_CONF
# (an existing non-link slurm.conf is never touched: then export SLURM_CONF as printed).
#
# What it is: slurmctld, slurmdbd (accounting: submitit polls job states with sacct, and without it a killed job
# never looks finished), MariaDB on 127.0.0.1:$MATHFIRST_SLURM_DB_PORT, munged, and two slurmd started as
# `slurmd -N n1` / `slurmd -N n2` (NodeAddr=127.0.0.1, distinct ports). n1 and n2 get an /etc/hosts line so that
# torch rendezvous on "n1" resolves.
# What it simplifies: no systemd (daemons are started by hand and stopped by PID), SlurmUser=root, no cgroups
# (proctrack/linuxproc, task/none: --mem is not enforced), CPUs and memory per node are declared, not detected
# (SlurmdParameters=config_overrides), so small jobs can run side by side on a 2-core machine.
# Short cred_expire and scheduler intervals make a requeued job restart in ~10 s instead of ~2 minutes.
# Needs root (apt-get, /etc/hosts, munge). Tested on Debian 12 (Slurm 22.05, MariaDB 10.11, munge 0.5.15).
set -euo pipefail

STATE_DIR=${MATHFIRST_SLURM_DIR:-/var/lib/mathfirst-slurm}
CLUSTER=${MATHFIRST_SLURM_CLUSTER:-mathfirst}
PARTITION=${MATHFIRST_SLURM_PARTITION:-debug}
ACCOUNT=${MATHFIRST_SLURM_ACCOUNT:-mathfirst}
CPUS_PER_NODE=${MATHFIRST_SLURM_CPUS:-8}
MEM_PER_NODE_MB=${MATHFIRST_SLURM_MEM_MB:-8192}
CTLD_PORT=${MATHFIRST_SLURM_CTLD_PORT:-17817}
DBD_PORT=${MATHFIRST_SLURM_DBD_PORT:-17819}
DB_PORT=${MATHFIRST_SLURM_DB_PORT:-17306}
NODE_PORTS=(17001 17002)
NODES=(n1 n2)
HOST=$(hostname -s)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOG=$STATE_DIR/log
SLURM_CONF_FILE=$ETC/slurm.conf
export SLURM_CONF=$SLURM_CONF_FILE

say() { printf '[local_cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- processes -------------------------------------------------------------------------------------------------
pid_alive() {  # pid_alive PIDFILE -> 0 when the file names a live process
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit_s=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit_s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit_s}s waiting for $what (logs: $LOG)"
    sleep 0.2
  done
}

running() {  # running PID: alive and not a zombie waiting for its parent to reap it
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

stop_pidfiles() {  # stop_pidfiles NAME=PIDFILE...: SIGTERM to all, wait, SIGKILL what is left; only recorded PIDs
  local item name file pid pids=() names=()
  for item in "$@"; do
    name=${item%%=*}; file=${item#*=}
    if pid_alive "$file"; then
      pids+=("$(cat "$file")"); names+=("$name")
      kill -TERM "${pids[-1]}" 2>/dev/null || true
    fi
    rm -f "$file"
  done
  for i in "${!pids[@]}"; do
    for _ in $(seq 1 100); do running "${pids[$i]}" || break; sleep 0.1; done
    if running "${pids[$i]}"; then
      say "${names[$i]} (${pids[$i]}) ignored SIGTERM: SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    say "stopped ${names[$i]} (${pids[$i]})"
  done
}

# ---- install and configure ---------------------------------------------------------------------------------------
install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1 || {
    apt-get update >>"$LOG/apt.log" 2>&1
    apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 ||
      die "apt-get failed: $LOG/apt.log"
  }
}

write_if_changed() {  # write_if_changed FILE MODE  (content on stdin)
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv "$tmp" "$file"; CHANGED+=("$file"); fi
}
CHANGED=()

db_password() {
  [[ -s $ETC/db_password ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$ETC/db_password")
  cat "$ETC/db_password"
}

write_configs() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE_DIR/state" "$STATE_DIR/spool"
  write_if_changed "$SLURM_CONF_FILE" 644 <<EOF
# Written by slurm/local_cluster.sh; edits are overwritten on the next 'up'.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime: a requeued job may start again after ~10 s instead of ~125 s.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Use the CPUs/RealMemory below instead of the detected hardware (2 cores would drain nodes declaring 8).
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=30
MinJobAge=60
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=n[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=${NODE_PORTS[0]}-${NODE_PORTS[1]} CPUs=$CPUS_PER_NODE RealMemory=$MEM_PER_NODE_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
  local password; password=$(db_password)
  write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Written by slurm/local_cluster.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
EOF
  write_if_changed "$ETC/my.cnf" 644 <<EOF
[mariadbd]
datadir=$STATE_DIR/mysql
socket=$RUN/mysqld.sock
pid-file=$RUN/mariadbd.pid
log-error=$LOG/mariadbd.log
bind-address=127.0.0.1
port=$DB_PORT
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
EOF
  link_client_conf
  add_hosts_line
}

link_client_conf() {
  mkdir -p /etc/slurm
  if [[ -L /etc/slurm/slurm.conf || ! -e /etc/slurm/slurm.conf ]]; then
    ln -sfn "$SLURM_CONF_FILE" /etc/slurm/slurm.conf
  else
    say "/etc/slurm/slurm.conf belongs to another cluster: export SLURM_CONF=$SLURM_CONF_FILE to use this one"
  fi
}

add_hosts_line() {
  local name missing=()
  for name in "${NODES[@]}"; do getent hosts "$name" >/dev/null || missing+=("$name"); done
  ((${#missing[@]} == 0)) || echo "127.0.0.1 ${missing[*]}  # mathfirst local Slurm nodes" >>/etc/hosts
}

# ---- daemons ---------------------------------------------------------------------------------------------------
start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a munged (ours or the system's) answers
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$RUN/munged.pid"  # recorded here: 'down' stops only a munged this script started
  wait_for 10 munged sh -c 'munge -n | unmunge'
  say "started munged ($(cat "$RUN/munged.pid"))"
}

mysql_root() { mariadb --no-defaults -S "$RUN/mysqld.sock" -u root "$@"; }

start_mariadb() {
  pid_alive "$RUN/mariadbd.pid" && return 0
  if [[ ! -d $STATE_DIR/mysql/mysql ]]; then
    mariadb-install-db --defaults-file="$ETC/my.cnf" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $LOG/mariadb-install.log"
  fi
  /usr/sbin/mariadbd --defaults-file="$ETC/my.cnf" --user=root >>"$LOG/mariadbd.log" 2>&1 &
  wait_for 60 mariadb mysql_root -e 'SELECT 1'
  local password; password=$(db_password)
  mysql_root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
  say "started mariadbd ($(cat "$RUN/mariadbd.pid")) on 127.0.0.1:$DB_PORT"
}

start_slurmdbd() {
  pid_alive "$RUN/slurmdbd.pid" && return 0
  /usr/sbin/slurmdbd >>"$LOG/slurmdbd.out" 2>&1  # daemonizes and writes its PID file
  wait_for 60 slurmdbd sacctmgr -n list cluster
  say "started slurmdbd ($(cat "$RUN/slurmdbd.pid"))"
  # Register before slurmctld starts so that its first registration finds the cluster.
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

register_account() {
  sacctmgr -n list account format=account | grep -qw "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="mathfirst dev" >/dev/null
  local user; user=${SUDO_USER:-$(id -un)}
  for u in root "$user"; do
    sacctmgr -n list assoc user="$u" account="$ACCOUNT" format=user | grep -qw "$u" ||
      sacctmgr -i add user "$u" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
  done
}

start_slurmctld() {
  if pid_alive "$RUN/slurmctld.pid"; then
    # A running cluster picks up a changed slurm.conf without a restart.
    if [[ " ${CHANGED[*]} " == *" $SLURM_CONF_FILE "* ]]; then scontrol reconfigure && say "reconfigured"; fi
    return 0
  fi
  /usr/sbin/slurmctld >>"$LOG/slurmctld.out" 2>&1
  wait_for 60 slurmctld scontrol ping
  say "started slurmctld ($(cat "$RUN/slurmctld.pid"))"
}

start_slurmd() {
  local node
  for node in "${NODES[@]}"; do
    pid_alive "$RUN/slurmd-$node.pid" && continue
    mkdir -p "$STATE_DIR/spool/$node"
    /usr/sbin/slurmd -N "$node" >>"$LOG/slurmd-$node.out" 2>&1
    wait_for 30 "slurmd $node" test -s "$RUN/slurmd-$node.pid"
    say "started slurmd -N $node ($(cat "$RUN/slurmd-$node.pid"))"
  done
}

nodes_idle() {
  local states; states=$(sinfo -h -N -p "$PARTITION" -o '%T' | sort -u | tr '\n' ' ')
  [[ $states =~ ^(idle|mixed|allocated|\ )+$ ]]
}

wait_nodes_idle() {
  local deadline=$((SECONDS + 60))
  until nodes_idle; do
    # A node left down/drained by an earlier unclean stop comes back once its slurmd answers.
    if sinfo -h -N -p "$PARTITION" -o '%T' | grep -Eq 'down|drain'; then
      scontrol update nodename=n[1-2] state=resume >/dev/null 2>&1 || true
    fi
    ((SECONDS < deadline)) || { sinfo -N >&2; die "nodes not idle after 60 s (logs: $LOG)"; }
    sleep 0.3
  done
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "run as root (it installs packages, writes /etc/hosts and starts munged)"
  local t0=$SECONDS
  mkdir -p "$LOG"
  install_packages
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurmctld
  register_account
  start_slurmd
  wait_nodes_idle
  say "up in $((SECONDS - t0)) s: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT, SLURM_CONF=$SLURM_CONF_FILE"
}

cmd_down() {
  stop_pidfiles "slurmd-n1=$RUN/slurmd-n1.pid" "slurmd-n2=$RUN/slurmd-n2.pid" "slurmctld=$RUN/slurmctld.pid"
  stop_pidfiles "slurmdbd=$RUN/slurmdbd.pid"
  stop_pidfiles "mariadbd=$RUN/mariadbd.pid"
  if [[ -s $RUN/munged.pid ]]; then stop_pidfiles "munged=$RUN/munged.pid"; rm -f /run/munge/munged.pid; fi
}

cmd_status() {
  local name file rc=0
  for name in munged mariadbd slurmdbd slurmctld slurmd-n1 slurmd-n2; do
    file=$RUN/$name.pid
    if pid_alive "$file"; then printf '%-10s running  pid %s\n' "$name" "$(cat "$file")"
    elif [[ $name == munged ]] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      printf '%-10s running  (not started by this script)\n' "$name"
    else printf '%-10s stopped\n' "$name"; rc=1; fi
  done
  ((rc == 0)) && sinfo -N -p "$PARTITION"
  return $rc
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status   (state in \$MATHFIRST_SLURM_DIR, default /var/lib/mathfirst-slurm)" >&2; exit 2 ;;
esac
