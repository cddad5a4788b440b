#!/bin/sh
# Power agent of the lifecycle tests (root, inside the test bed, started by test_lifecycles.py):
# carries out the requests suspend.sh/resume.sh leave in /tmp/ccsa-power. A "boot" waits
# /tmp/ccsa-power/boot-seconds, then starts `slurmd -b -N NODE`; a "power off" stops the
# node's slurmd. Each action is logged to /tmp/ccsa-power/log with its epoch time.
D=/tmp/ccsa-power
while :; do
    for f in "$D"/suspend-* "$D"/resume-*; do
        [ -e "$f" ] || continue
        rm -f "$f"
        n=${f##*-}
        echo "$(date +%s) ${f##*/}" >>"$D/log"
        case $f in
        */suspend-*)
            [ -f "/run/slurm/slurmd-$n.pid" ] && kill "$(cat "/run/slurm/slurmd-$n.pid")"
            ;;
        */resume-*)
            (
                sleep "$(cat "$D/boot-seconds" 2>/dev/null || echo 8)"
                env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
                    /usr/sbin/slurmd -b -N "$n"
                echo "$(date +%s) booted $n" >>"$D/log"
            ) &
            ;;
        esac
    done
    sleep 0.3
done
