# spillway-collector: one static binary (the eBPF program is inside it) and
# an empty state directory (built by `cargo xtask images`).
#
# It runs as uid 0 with the host's PID namespace and the capabilities of
# its systemd unit (deploy/systemd/README.md says why each), not
# --privileged, as e2e/tests/images.rs runs it:
#   --pid host --cap-drop ALL --cap-add BPF --cap-add PERFMON
#   --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH
#   --security-opt seccomp=unconfined   (the default profile refuses io_uring)
#   -v /var/run/docker.sock:/var/run/docker.sock
#   -v /var/lib/spillway:/var/lib/spillway
# Docker engines before 23 do not know CAP_BPF and CAP_PERFMON: give
# --cap-add SYS_ADMIN in their place.
FROM scratch
COPY spillway-collector /spillway-collector
COPY state/ /var/lib/spillway/
USER 0:0
# v2 Ingress gRPC; HTTP (routes API, /logs, /health, /metrics).
EXPOSE 3458 8080
ENTRYPOINT ["/spillway-collector"]
