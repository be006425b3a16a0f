#!/bin/busybox sh
# /init of the whole-system test guest: Debian arm64 kernel under qemu-system-aarch64 -M virt,
# vivid (V4L2 test driver) as the camera, the virt board's PL061 as the GPIO controller, and the
# real aarch64 partguard binary. Results go to the host over 9p (/results).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do
    case "$m" in
    vivid) insmod /lib/modules/vivid.ko n_devs=1 node_types=0x101 ;;
    *) insmod /lib/modules/$m.ko ;;
    esac
done
mount -t 9p -o trans=virtio,version=9p2000.L results /results
{
    echo "uptime $(cut -d' ' -f1 /proc/uptime)"
    ls -l /dev/video* /dev/gpiochip*
    cat /sys/class/video4linux/video*/name
    cat /sys/bus/gpio/devices/gpiochip0/of_node/name 2>/dev/null || true
} >/results/guest-env.txt 2>&1
cd /e2e
./partguard check --config e2e.toml >/results/check.txt 2>&1
echo $? >/results/check.rc
./partguard run --config e2e.toml --frames "${PG_FRAMES:-2}" --stats-json /results/stats.json \
    >/results/run.txt 2>/results/run.log
echo $? >/results/run.rc
sync
poweroff -f
