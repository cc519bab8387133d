# spillway-rlp: one static binary and nothing else (built by
# `cargo xtask images`, which puts the binary in the build context).
FROM scratch
COPY spillway-rlp /spillway-rlp
# No shell, no libc, no user database: a numeric unprivileged user.
USER 65532:65532
# v2 Egress gRPC; the RLP gateway (HTTPS/SSE); /metrics and /health. The
# gateway and metrics bind to loopback unless given --gateway-addr 0.0.0.0:8088
# and --metrics-addr 0.0.0.0:14826.
EXPOSE 8083 8088 14826
ENTRYPOINT ["/spillway-rlp"]
