#!/bin/sh
# ResumeProgram: "boot" = wait, then start the node's slurmd, which registers with slurmctld
echo "$(date +%s) resume $*" >>/var/log/slurm/power.log
sleep "$(cat /opt/ccsa-tb/boot-seconds 2>/dev/null || echo 8)"
for n in $(/usr/bin/scontrol show hostnames "$1"); do
    /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /usr/sbin/slurmd -b -N "$n"
done
echo "$(date +%s) resumed $*" >>/var/log/slurm/power.log
exit 0
