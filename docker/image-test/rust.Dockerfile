# Stand-in for rust:<version>-slim-bookworm (scripts/image-test): the Debian stand-in with a C
# compiler and the host's own Rust toolchain (the build context), laid out like the official
# image (CARGO_HOME=/usr/local/cargo, cargo and rustc on PATH), trusting the host's CAs.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
# The host's CA bundle: where crates.io is reached through a TLS-inspecting proxy (as on the
# machines this runs on), cargo inside the build must trust that proxy as the host does.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
