# Asterisk 22 from Debian sid (bookworm has no asterisk package), the same packages the CI chroot
# uses (asterisk_conf/asterisk.sh). Our configuration is mounted at /etc/voicebridge (compose).
FROM debian:sid

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        asterisk asterisk-modules asterisk-core-sounds-en curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    # /run/asterisk holds the control socket (asterisk -rx); ARI bridge recording needs its spool.
    && mkdir -p /run/asterisk /var/spool/asterisk/recording

HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=6 \
    CMD curl -fsS -u voicebridge:voicebridge http://127.0.0.1:8088/ari/asterisk/info >/dev/null || exit 1

# -f: foreground, so the container lives as long as Asterisk does. Runs as root inside the
# container; every socket is on 127.0.0.1 (host networking, see docker-compose.yml).
CMD ["asterisk", "-f", "-C", "/etc/voicebridge/asterisk.conf"]
