# Builds the operator's images: `docker build --target manager .`, `--target agent` and
# `--target gateway`.
FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY pkg/ pkg/
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# The release the binaries report (--version): the Makefile's VERSION.
ARG VERSION=devel
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/aihub-dev/hive-operator/internal/version.Version=${VERSION}" -o /out/ ./cmd/manager ./cmd/hive-agent ./cmd/hive-gateway

# The manager: static, on distroless, as a non-root user.
FROM gcr.io/distroless/static:nonroot AS manager
WORKDIR /
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

# The reference agent (cmd/hive-agent): static, on distroless, as a non-root user. Its exec
# mode can only run what the image holds, so to wrap a script, copy /hive-agent from this
# stage into an image with the script's runtime.
FROM gcr.io/distroless/static:nonroot AS agent
WORKDIR /
COPY --from=build /out/hive-agent /hive-agent
USER 65532:65532
ENTRYPOINT ["/hive-agent"]

# The gateway (cmd/hive-gateway): static, on distroless, as a non-root user.
FROM gcr.io/distroless/static:nonroot AS gateway
WORKDIR /
COPY --from=build /out/hive-gateway /hive-gateway
USER 65532:65532
ENTRYPOINT ["/hive-gateway"]
