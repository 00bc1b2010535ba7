# Stand-in for gcr.io/distroless/{cc,static}-debian12:nonroot (scripts/image-test): the same
# Debian 12 packages unpacked into an empty image, with no shell and no package manager, and the
# same users (root 0, nonroot 65532) and defaults (USER 65532, WORKDIR /home/nonroot).
# VARIANT=cc adds glibc, libgcc, libstdc++ and libssl to static's files. TARGETARCH (a build
# argument here) unpacks another architecture's packages (`pkg:arm64`; `Architecture: all` ones
# as they are) with the machine's own Debian; nothing
# in the image is ever run at build time, so scripts/image-test re-labels that result as the
# other platform's image (docker export, then `FROM scratch` + `ADD` built with `--platform`).
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS unpack
ARG VARIANT=cc
ARG TARGETARCH
WORKDIR /debs
RUN arch="${TARGETARCH:-$(dpkg --print-architecture)}" \
    && if [ "$arch" != "$(dpkg --print-architecture)" ]; then dpkg --add-architecture "$arch"; fi \
    && apt-get update \
    && packages="base-files netbase tzdata ca-certificates" \
    && if [ "$VARIANT" = cc ]; then packages="$packages libc6 libgcc-s1 libstdc++6 libssl3 libgomp1"; fi \
    && for p in $packages; do apt-get download "$p:$arch" 2>/dev/null || apt-get download "$p"; done \
    && mkdir -p /rootfs \
    && for deb in *.deb; do dpkg-deb -x "$deb" /rootfs; done \
    && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt 2>/dev/null \
       || (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates >/dev/null \
           && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt) \
    && rm -rf /rootfs/usr/share/doc/*/changelog* /rootfs/usr/share/man /rootfs/usr/share/info \
              /rootfs/usr/share/lintian /rootfs/usr/share/locale \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
    && printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > /rootfs/etc/group \
    && printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf \
    && mkdir -p /rootfs/tmp /rootfs/root /rootfs/home/nonroot \
    && chmod 1777 /rootfs/tmp && chown 65532:65532 /rootfs/home/nonroot

FROM scratch
COPY --from=unpack /rootfs /
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532
WORKDIR /home/nonroot
