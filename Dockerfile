# syntax=docker/dockerfile:1
#
# kubedisco's container image: one static (musl) binary on distroless/static,
# running as the image's non-root user (65532). The image is built in CI with
# `docker buildx build --platform linux/amd64,linux/arm64 .` (each platform's
# builder runs natively or under emulation, so the target is the builder's own
# architecture). The Helm chart and deploy/ rely on the binary being at
# /usr/local/bin/kubedisco (on PATH, for `kubectl exec ... -- kubedisco dump`).

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
# ring (rustls' crypto) compiles C and assembly: musl-gcc for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && cargo build --release --locked --target "$target" --bin kubedisco \
 && install -D -m 0755 "target/$target/release/kubedisco" /out/kubedisco \
 && /out/kubedisco version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kubedisco /usr/local/bin/kubedisco
# Sidecar mode runs as this user; DaemonSet mode overrides it with root and
# only NET_ADMIN + NET_BIND_SERVICE (see charts/kubedisco).
USER 65532:65532
EXPOSE 53/udp 53/tcp 8053/tcp
ENTRYPOINT ["/usr/local/bin/kubedisco"]
CMD ["agent"]
