# Stand-in for redis:7 (scripts/image-test): Debian 12's Redis 7. Like the official image, a
# `redis-server` command without a config file runs with protected mode off, so other containers
# on the compose network can connect.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && printf '#!/bin/sh\nif [ "$1" = redis-server ]; then shift; exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@" --protected-mode no; fi\nexec "$@"\n' > /usr/local/bin/docker-entrypoint.sh \
    && chmod +x /usr/local/bin/docker-entrypoint.sh \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
