# spillway-router: one static binary and nothing else (built by
# `cargo xtask images`, which puts the binary in the build context).
FROM scratch
COPY spillway-router /spillway-router
# No shell, no libc, no user database: a numeric unprivileged user.
USER 65532:65532
# v2 Ingress and Egress gRPC; /metrics and /health (loopback unless given
# --metrics-addr 0.0.0.0:14825).
EXPOSE 8082 14825
ENTRYPOINT ["/spillway-router"]
