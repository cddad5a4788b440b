#!/bin/sh
# SuspendProgram (slurmctld runs it as SlurmUser=slurm): ask the power agent to "power off"
# each node, i.e. stop its slurmd. Only root can do that; the agent (agent.sh) runs as root.
for n in $(/usr/bin/scontrol show hostnames "$1"); do
    : >"/tmp/ccsa-power/suspend-$n"
done
exit 0
