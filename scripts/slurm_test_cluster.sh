#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages, for the cluster tier of the tests
# (tests/cluster/) and for trying the README's SLURM commands by hand. Needs root.
#
#   eval "$(bash scripts/slurm_test_cluster.sh start DIR)"   # installs what is missing (apt-get), starts it,
#                                                             # prints `export SLURM_CONF=DIR/slurm.conf`
#   sbatch ...; squeue; sacct; scontrol ...                   # with SLURM_CONF set as printed
#   bash scripts/slurm_test_cluster.sh stop DIR               # stops what it started
#
# Everything lives in DIR (configs, state, spool, logs, the accounting database): nothing in /etc/slurm is
# read or written and ports are picked free, so a real cluster's config on the machine is left alone and two
# test clusters do not meet. This host is controller and node (NodeAddr=127.0.0.1), with no cgroups
# (proctrack/linuxproc, task/none) so it runs in containers and VMs. Two partitions on the node: `debug`
# (the default), whose jobs are preempted and requeued by jobs of `urgent` (PreemptMode=REQUEUE); a job of
# urgent asking for the node's one `token` (--gres=token:1) preempts only the job of debug holding it. The
# node declares CPUS (default 8) CPUs whatever the hardware has, so a few one-CPU test jobs run at once.
# Accounting (sacct, which submitit reads job states from, and the exit codes SLURM records) is slurmdbd on
# a private MariaDB server; ACCOUNTING=0 starts the cluster without it.
# The timings are SLURM's defaults (KillWait=30, the 30 s time-limit timer, a requeued job's ~2 min
# BeginTime); tests that requeue move the BeginTime with `scontrol update JobId=N StartTime=now`.
set -euo pipefail

action=${1:-}
dir=${2:-}
accounting=${ACCOUNTING:-1}
usage="usage: $0 start|stop DIR"
if [ -z "$action" ] || [ -z "$dir" ]; then echo "$usage" >&2; exit 2; fi
if [ "$(id -u)" != 0 ]; then
  echo "error: a SLURM test cluster needs root (it starts munged, slurmdbd, slurmctld and slurmd)" >&2
  exit 1
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop_pid() {  # the daemon whose pid file is $1, if it runs
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

stop_all() {
  if [ -f "$dir/slurmctld.pid" ] && [ -f "$dir/slurm.conf" ]; then  # its jobs first: SIGKILL, no KillWait
    jobs=$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF="$dir/slurm.conf" scancel --full --signal=KILL $jobs 2>/dev/null || true
      for _ in $(seq 100); do
        [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/slurmdbd.pid"
  stop_pid "$dir/db/mariadbd.pid"
  stop_pid "$dir/munged.pid"  # only a munged this script started
}

case "$action" in
  stop) stop_all; exit 0 ;;
  start) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
stop_all  # a cluster left running in this directory

packages="slurmctld slurmd slurm-client munge"
commands="slurmctld slurmd sbatch munged"
if [ "$accounting" = 1 ]; then
  packages="$packages slurmdbd mariadb-server"
  commands="$commands slurmdbd sacct mariadbd mariadb-install-db"
fi
missing=""
for c in $commands; do command -v "$c" >/dev/null || missing="$missing $c"; done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "error:$missing missing and there is no apt-get to install $packages" >&2
    exit 1
  fi
  echo "installing $packages (apt-get) ..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $packages; } >"$dir/apt.log" 2>&1 \
    || { echo "error: apt-get could not install $packages; see $dir/apt.log" >&2; exit 1; }
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "error: $what did not come up; logs in $dir" >&2; exit 1; fi
    sleep 0.2
  done
}

# munge: SLURM's authentication; one key and one daemon per machine (Debian's package makes the key).
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge && mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 600 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
  wait_for 10 munged munge -n
  cp /run/munge/munged.pid "$dir/munged.pid"
fi

host=$(hostname -s)
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
accounting_conf="AccountingStorageType=accounting_storage/none"
if [ "$accounting" = 1 ]; then
  # a private MariaDB server (TCP on 127.0.0.1) holding slurmdbd's tables
  db_port=$(free_port)
  if [ ! -d "$dir/db/data/mysql" ]; then
    mkdir -p "$dir/db"
    mariadb-install-db --no-defaults --datadir="$dir/db/data" --user=root --skip-test-db \
      --auth-root-authentication-method=normal >"$dir/db/install.log" 2>&1
  fi
  mariadbd --no-defaults --datadir="$dir/db/data" --user=root --bind-address=127.0.0.1 --port="$db_port" \
    --socket="$dir/db/mysql.sock" --pid-file="$dir/db/mariadbd.pid" --log-error="$dir/db/error.log" \
    --innodb-buffer-pool-size=32M --innodb-lock-wait-timeout=900 --skip-log-bin </dev/null >/dev/null 2>&1 &
  wait_for 60 MariaDB mariadb --no-defaults -h 127.0.0.1 -P "$db_port" -u root -e "select 1"
  dbd_port=$(free_port)
  cat >"$dir/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
AuthType=auth/munge
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
EOF
  chmod 600 "$dir/slurmdbd.conf"
  accounting_conf="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port"
fi

cat >"$dir/slurm.conf" <<EOF
# A one-node test cluster (scripts/slurm_test_cluster.sh); not for production.
ClusterName=bntest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# no cgroups: runs in containers and VMs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
$accounting_conf
JobAcctGatherType=jobacct_gather/none
# the defaults of most clusters: SIGTERM, then SIGKILL 30 s later; finished jobs listed by squeue for 5 min
KillWait=30
MinJobAge=300
SchedulerParameters=sched_interval=2
# jobs of partition urgent preempt (requeue) jobs of partition debug
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# one "token" (a count-only generic resource, like one GPU): a job of urgent asking for it preempts the job
# of debug that holds it, and only that one
GresTypes=token
NodeName=$host NodeAddr=127.0.0.1 CPUs=${CPUS:-8} Gres=token:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
export SLURM_CONF=$dir/slurm.conf

if [ "$accounting" = 1 ]; then
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster bntest >/dev/null 2>&1 || true
fi
slurmctld -i
slurmd -N "$host"
nodes_up() { sinfo -h -o %T | grep -q -E '^(idle|mixed|allocated)'; }
wait_for 60 "the node" nodes_up
echo "export SLURM_CONF=$SLURM_CONF"
