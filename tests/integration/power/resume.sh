#!/bin/sh
# ResumeProgram (run as SlurmUser=slurm): ask the power agent to "boot" each node: wait, then
# start its slurmd with -b, so it registers as freshly booted (node_mgr.c waiting_for_node_boot).
for n in $(/usr/bin/scontrol show hostnames "$1"); do
    : >"/tmp/ccsa-power/resume-$n"
done
exit 0
