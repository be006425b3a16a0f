#!/usr/bin/env bash
# Installs partguard from the unpacked release tarball on a Raspberry Pi or a Jetson (run as root):
# binary to /usr/local/bin, models and samples to /usr/local/share/partguard, the config to
# /etc/partguard (kept if present), a `partguard` system user in the video and gpio groups, and the
# systemd unit (enabled, not started: edit the config first).
set -euo pipefail
cd "$(dirname "$0")"
install -m 0755 partguard /usr/local/bin/partguard
install -d /usr/local/share/partguard/models /etc/partguard
cp models/* /usr/local/share/partguard/models/
cp -r samples /usr/local/share/partguard/
[ -e /etc/partguard/partguard.toml ] || install -m 0644 partguard.toml /etc/partguard/partguard.toml
getent group gpio >/dev/null || groupadd --system gpio
id partguard >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin partguard
usermod -a -G video,gpio partguard
# GPIO character devices readable by the gpio group (Raspberry Pi OS ships this rule already).
if [ ! -e /etc/udev/rules.d/60-partguard-gpio.rules ]; then
    echo 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' \
        >/etc/udev/rules.d/60-partguard-gpio.rules
    udevadm control --reload-rules && udevadm trigger --subsystem-match=gpio || true
fi
install -m 0644 partguard.service /etc/systemd/system/partguard.service
systemctl daemon-reload
systemctl enable partguard.service
echo "installed; edit /etc/partguard/partguard.toml, run 'partguard check --config /etc/partguard/partguard.toml', then 'systemctl start partguard'"
