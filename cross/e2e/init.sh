#!/bin/busybox sh
# /init of the whole-system test guest: Debian arm64 kernel under qemu-system-aarch64 -M virt,
# vivid (V4L2 test driver) as the camera, the virt board's PL061 as the GPIO controller, and the
# real aarch64 partguard binary. vivid_feed shows each part image on vivid's HDMI loop and
# triggers partguard once per image; results go to the host over 9p (/results).
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
# Loopback only: the page is served on the guest's 127.0.0.1.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
{
    echo "uptime $(cut -d' ' -f1 /proc/uptime)"
    ls -l /dev/video* /dev/gpiochip*
    cat /sys/class/video4linux/video*/name
    cat /sys/bus/gpio/devices/gpiochip0/of_node/name 2>/dev/null || true
} >/results/guest-env.txt 2>&1
cd /e2e
./partguard check --config e2e.toml >/results/check.txt 2>&1
echo $? >/results/check.rc
# Camera controls: the same scene collected at brightness 40 and 220 (the host compares the
# images), then a control vivid lacks and a value out of range (check must name them).
sed 's/^brightness = 40$/brightness = 220/' collect.toml >bright.toml
sed 's/^brightness = 40$/exposure_time_absolute = 100/' collect.toml >missing.toml
sed 's/^brightness = 40$/brightness = 300/' collect.toml >range.toml
for c in collect:dark bright:bright; do
    ./partguard collect --config ${c%%:*}.toml --out /results/${c##*:} --frames 3 \
        >/results/${c##*:}.txt 2>&1
    echo $? >/results/${c##*:}.rc
done
for c in missing range; do
    ./partguard check --config $c.toml >/results/$c.txt 2>&1
    echo $? >/results/$c.rc
done
# The feeder sets vivid's loop controls, starts the HDMI output, and waits until partguard's
# capture is open before its first trigger.
./vivid_feed --trigger /tmp/partguard-trigger --decisions /results/run.txt \
    --ready-file /results/run.log --manifest /results/feed.txt $(cat images.txt) \
    >/results/feed.log 2>&1 &
feeder=$!
./partguard run --config e2e.toml --stats-json /results/stats.json \
    >/results/run.txt 2>/results/run.log &
pg=$!
wait $feeder
echo $? >/results/feed.rc
# A second process asking for the reject line while partguard holds it (the kernel's EBUSY on a
# real GPIO chip): a clear error naming the line, and partguard's line is not disturbed.
./partguard safe-state --config e2e.toml >/results/busy.txt 2>&1
echo $? >/results/busy.rc
# Once every shown part has passed the ejector (the page's live counts: all parts registered,
# none pending), fetch the page's status and metrics from the guest itself, for the host's check.
shown=$(wc -l < /results/feed.txt)
i=0
while [ $i -lt 600 ]; do
    wget -q -O /results/status.json http://127.0.0.1:8080/api/status 2>/results/wget.log &&
        grep -q "\"parts\":$shown," /results/status.json &&
        grep -q '"reject_pending":0,' /results/status.json && break
    sleep 1
    i=$((i + 1))
done
wget -q -O /results/metrics.txt http://127.0.0.1:8080/metrics 2>>/results/wget.log
# Every image judged: stop; partguard finishes the parts still on their way to the ejector.
kill -INT $pg
wait $pg
echo $? >/results/run.rc
sync
poweroff -f
