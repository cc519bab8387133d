# spillway-rlp: one static binary and nothing else (built by
# `cargo xtask images`, which puts the binary in the build context).
FROM scratch
COPY spillway-rlp /spillway-rlp
# No shell, no libc, no user database: a numeric unprivileged user.
USER 65532:65532
# v2 Egress gRPC; the RLP gateway (HTTP/SSE); /metrics and /health.
EXPOSE 8083 8088 14826
ENTRYPOINT ["/spillway-rlp"]
