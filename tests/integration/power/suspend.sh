#!/bin/sh
# SuspendProgram: "power off" = stop the node's slurmd (slurmctld runs this as SlurmUser=root)
echo "$(date +%s) suspend $*" >>/var/log/slurm/power.log
for n in $(/usr/bin/scontrol show hostnames "$1"); do
    [ -f /run/slurm/slurmd-$n.pid ] && kill "$(cat /run/slurm/slurmd-$n.pid)"
done
exit 0
