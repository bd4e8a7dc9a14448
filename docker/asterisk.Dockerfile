# Asterisk 22 from Debian sid (bookworm has no asterisk package): the same packages as the chroot
# that asterisk_conf/asterisk.sh builds. Our configuration is mounted at /etc/voicebridge.
#
# BASE: `debian:sid` from a registry, or the local debootstrap image docker/containers.sh makes
# (localhost/voicebridge-base:sid) where no registry serves base images.
ARG BASE=debian:sid
FROM ${BASE}

# Check-Valid-Until=false: sid's Release file on some mirrors is past its Valid-Until date.
RUN apt-get -o Acquire::Check-Valid-Until=false update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        asterisk asterisk-modules asterisk-core-sounds-en curl ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    # /run/asterisk holds the control socket (asterisk -rx); ARI bridge recording needs its spool.
    && mkdir -p /run/asterisk /var/spool/asterisk/recording

# Kept in the image with `--format docker` (BUILDAH_FORMAT=docker in docker/containers.sh).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=6 \
    CMD curl -fsS -u voicebridge:voicebridge http://127.0.0.1:8088/ari/asterisk/info >/dev/null || exit 1

# -f: foreground, so the container lives as long as Asterisk does. Runs as root inside the
# container; every socket is on 127.0.0.1 of the container's network (see docker-compose.yml).
CMD ["asterisk", "-f", "-C", "/etc/voicebridge/asterisk.conf"]
